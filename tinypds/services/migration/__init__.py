"""Migration: moving the account in from another PDS and out to one (createAccount with an
existing DID, importRepo, missing blobs, the PLC operation, activation), resumable, and the
XRPC client side that drives the other server.

May import core, store, config, errors and every subpackage below it (net, repo, identity,
sync, auth, account); never proxy or ops.
"""
