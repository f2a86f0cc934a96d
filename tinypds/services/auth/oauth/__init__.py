"""The atproto OAuth authorization server (PAR, PKCE, DPoP, scopes, consent) as services.

Modules: scopes (grammar and checks), jwk (keys and thumbprints), dpop (proofs, nonces,
replay cache), clients (client metadata fetch and client authentication), server
(OAuthService: requests, codes, tokens, revocation, access-token verification), pages
(the sign-in/consent and account HTML). No HTTP framework types here: xrpc/oauth.py routes.
"""
