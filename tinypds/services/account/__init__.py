"""Account: the one account's care — its email (tokens and
SMTP), password resets, deactivation, reactivation and deletion (with their #account
events), checkAccountStatus (and whether the DID still names us), the owner page's figures,
and the account's private preferences.

May import core, store, config, errors and the net, repo, identity, sync and auth subpackages.
"""
