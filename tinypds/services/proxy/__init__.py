"""Proxy: forwarding app.bsky.*, chat.bsky.* and atproto-proxy calls to the AppView, the chat
service or a DID-named service, with a service-auth token signed by the account's key;
which targets are allowed and how they are resolved.

May import core, config, errors and the subpackages below it (net, repo, identity, sync,
auth, account, migration); today it uses identity and net only.
"""
