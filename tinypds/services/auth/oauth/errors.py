"""OAuthError: an OAuth protocol failure, rendered as {"error", "error_description"}.

A leaf module (imports nothing), so the HTTP layer can catch OAuth errors without loading
the OAuth server, client registry and DPoP verifier until an OAuth request arrives.
"""

from __future__ import annotations


class OAuthError(Exception):
    """An OAuth protocol error: rendered as {"error", "error_description"} with `status`."""

    def __init__(self, error: str, description: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(description)
        self.error, self.description, self.status, self.headers = error, description, status, headers or {}
