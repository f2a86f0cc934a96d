"""Identity: the account's DID and handle — resolving others' DIDs and handles (DNS, did:plc,
did:web), the did:plc operation log (kept in our file, learned from the directory, verified
op by op), the local identity service (create, update handle, sign PLC operations), who signed
a repo CAR, the private keys (the sole keyring importer, with the sealed-file backend), and
creating the local account (its row, signing key and first commit).

May import core, store, config, errors and the repo subpackage (the first commit).
"""
