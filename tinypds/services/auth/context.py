"""AuthContext: who is calling and with which scopes — what every credential check yields.

A leaf of the auth package (no I/O); the session scopes' names live here too, so OAuth and
the pages can name a caller without importing the session service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACCESS_SCOPE = "com.atproto.access"
APP_PASS_SCOPE = "com.atproto.appPass"
APP_PASS_PRIVILEGED_SCOPE = "com.atproto.appPassPrivileged"
REFRESH_SCOPE = "com.atproto.refresh"

KIND_BY_SCOPE = {
    ACCESS_SCOPE: "access",
    APP_PASS_SCOPE: "app_password",
    APP_PASS_PRIVILEGED_SCOPE: "app_password_privileged",
}


@dataclass(frozen=True)
class AuthContext:
    """Who is calling and with which scopes. kind: access | app_password |
    app_password_privileged | refresh | service (| oauth later)."""

    did: str
    kind: str
    scopes: frozenset[str]
    session_id: str | None = None
    token_id: str | None = None

    @property
    def is_full_session(self) -> bool:
        return self.kind == "access"

    @property
    def is_privileged(self) -> bool:
        return self.kind in ("access", "app_password_privileged")

    def require(self, action: Any) -> None:
        """Refuse (403 ScopeMissingError) an OAuth token whose scopes do not allow `action`
        (a services.auth.oauth.scopes action); other credentials keep their own checks."""
        if self.kind == "oauth":
            from .oauth.scopes import require

            require(self.scopes, action)
