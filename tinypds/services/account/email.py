"""Email for the account: single-use email tokens and sending them by SMTP.

Owns the token purposes of the account flows (confirm_email, update_email, reset_password,
delete_account): `XXXXX-XXXXX` from a 32-letter alphabet, valid 15 minutes, one outstanding
per (did, purpose), stored only as a SHA-256 hash in action_tokens (store.identity); and the
Mailer (stdlib smtplib, run on a thread so the event loop never waits on a mail server).
Imports store.identity and the stdlib only; no HTTP types. Tricky bits: a wrong token does
not spend the outstanding one (the reference's behaviour), a right one is deleted in the same
transaction as the change it allows; without TINYPDS_SMTP_URL nothing is sent and the owner
mints a token with `tinypds account email-token PURPOSE` instead (the hash is all we keep).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from ...errors import ExpiredToken, InvalidRequest, InvalidToken, UpstreamFailure
from ...store import identity as identity_db

log = logging.getLogger("tinypds.email")

TOKEN_TTL_SECONDS = 15 * 60
PURPOSES = ("confirm_email", "update_email", "reset_password", "delete_account")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # base32, as the reference's tokens
_TOKEN_RE = re.compile(r"^[A-Z2-7]{5}-[A-Z2-7]{5}$")
SEND_TIMEOUT = 20.0

_SUBJECTS = {
    "confirm_email": "Confirm your email",
    "update_email": "Email update requested",
    "reset_password": "Password reset requested",
    "delete_account": "Account deletion requested",
}
_WHAT = {
    "confirm_email": "confirm this email address for your account",
    "update_email": "change the email address of your account",
    "reset_password": "reset the password of your account",
    "delete_account": "DELETE your account and everything in it",
}


def new_token() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


def token_hash(token: str) -> bytes:
    return hashlib.sha256(b"tinypds email token\0" + token.strip().upper().encode("utf-8")).digest()


def check_purpose(purpose: str) -> str:
    purpose = purpose.replace("-", "_")
    if purpose not in PURPOSES:
        raise InvalidRequest(f"unknown email token purpose {purpose!r}: one of {', '.join(PURPOSES)}")
    return purpose


class EmailTokens:
    """Mint and check email tokens of one database (`db`: store Database)."""

    def __init__(self, db: Any, clock: Callable[[], float] = time.time):
        self.db = db
        self.clock = clock

    def _put(self, did: str, purpose: str) -> tuple[str, Callable[[Any], None]]:
        purpose = check_purpose(purpose)
        token = new_token()
        expires = int(self.clock()) + TOKEN_TTL_SECONDS
        return token, lambda c: identity_db.put_token(c, did, purpose, token_hash(token), expires)

    async def mint(self, did: str, purpose: str) -> str:
        """A new token (replacing any outstanding one of the purpose)."""
        token, write = self._put(did, purpose)
        await self.db.awrite(write)
        return token

    def mint_sync(self, did: str, purpose: str) -> str:
        """For the CLI (no event loop): a new token, replacing any outstanding one."""
        token, write = self._put(did, purpose)
        self.db.write(write)
        return token

    def check(self, conn: Any, did: str, purpose: str, token: str | None, *, spend: bool = True) -> None:
        """Inside a write transaction: InvalidToken (wrong/absent) or ExpiredToken; a valid
        token is deleted when `spend` (so it is used exactly once, with the change it allows)."""
        purpose = check_purpose(purpose)
        if not token or not isinstance(token, str) or not _TOKEN_RE.fullmatch(token.strip().upper()):
            raise InvalidToken("Token is invalid")
        found = identity_db.peek_token(conn, did, purpose)
        if found is None or not hmac.compare_digest(found[0], token_hash(token)):
            raise InvalidToken("Token is invalid")
        if found[1] < int(self.clock()):
            raise ExpiredToken("Token is expired")
        if spend:
            identity_db.take_token(conn, did, purpose)

    @staticmethod
    def drop_all(conn: Any, did: str) -> None:
        for purpose in PURPOSES:
            identity_db.take_token(conn, did, purpose)


# ---- SMTP ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool  # smtps:// (port 465); smtp:// upgrades with STARTTLS when offered

    def __repr__(self) -> str:  # never print the password
        return f"SmtpTarget({self.host}:{self.port}, user={self.username!r}, tls={'implicit' if self.implicit_tls else 'starttls'})"


def parse_smtp_url(url: str) -> SmtpTarget:
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("TINYPDS_SMTP_URL must look like smtp://user:password@host:587 or smtps://host:465")
    port = parts.port or (465 if parts.scheme == "smtps" else 587)
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return SmtpTarget(parts.hostname, port, user, password, parts.scheme == "smtps")


class Mailer:
    """Sends one plain-text message per call; `enabled` is False without an SMTP URL."""

    def __init__(self, smtp_url: str, sender: str, *, timeout: float = SEND_TIMEOUT,
                 tls_context: ssl.SSLContext | None = None):
        self.target = parse_smtp_url(smtp_url) if smtp_url else None
        self.sender = sender
        self.timeout = timeout
        self.tls_context = tls_context

    @classmethod
    def from_settings(cls, settings: Any) -> "Mailer":
        sender = settings.email_from or f"noreply@{settings.bare_hostname}"
        return cls(settings.smtp_url, sender)

    @property
    def enabled(self) -> bool:
        return self.target is not None

    def _send_sync(self, msg: EmailMessage) -> None:
        t = self.target
        assert t is not None
        context = self.tls_context or ssl.create_default_context()
        if t.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(t.host, t.port, timeout=self.timeout, context=context)
        else:
            client = smtplib.SMTP(t.host, t.port, timeout=self.timeout)
        with client:
            client.ehlo()
            if not t.implicit_tls and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            if t.username:
                client.login(t.username, t.password or "")
            client.send_message(msg)

    async def send(self, to: str, subject: str, text: str) -> None:
        """Send off the event loop; UpstreamFailure (502) if the mail server refuses or is away."""
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(text)
        try:
            await asyncio.to_thread(self._send_sync, msg)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("sending email via %r failed: %s", self.target, type(exc).__name__)
            raise UpstreamFailure("The email could not be sent; the server's owner can read a token with "
                                  "`tinypds account email-token`") from None

    async def send_token(self, to: str | None, purpose: str, token: str, handle: str | None) -> bool:
        """Mail `token` to `to` when SMTP is set up; False when nothing was sent."""
        if not self.enabled or not to:
            log.info("%s token minted; no %s, so it was not mailed (the owner can mint one with "
                     "`tinypds account email-token %s`)", purpose, "SMTP server" if to else "email address",
                     purpose.replace("_", "-"))
            return False
        text = (f"Hello{' ' + handle if handle else ''},\n\n"
                f"Someone (hopefully you) asked to {_WHAT[purpose]}.\n\n"
                f"Your code is:\n\n    {token}\n\n"
                f"It works once, within {TOKEN_TTL_SECONDS // 60} minutes. If this was not you, ignore this message.\n")
        await self.send(to, _SUBJECTS[purpose], text)
        return True
