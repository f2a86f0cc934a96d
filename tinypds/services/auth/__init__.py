"""Auth: who is calling, and with which rights — password and app-password sessions (HS256
access/refresh tokens), the sign-in throttle, user service auth, second factors (TOTP,
recovery codes, passkeys), the owner pages' sessions, and the OAuth authorization server
(PAR, PKCE, DPoP, scopes and permission sets).

May import core, store, config, errors and the identity, repo and net subpackages.
"""
