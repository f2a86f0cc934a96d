"""The owner's account care: email (confirm, change), password (reset by token, set offline),
and the account's life (deactivate, activate, request deletion, delete), as the reference PDS.

Services layer: no HTTP types, SQL through store.accounts / store.events / store.auth. Imports
services.email (tokens, Mailer) and services.auth.passwords. Tricky bits: a token is checked and
spent in the SAME transaction as the change it allows; every status change writes its
#account event in that transaction too (activation adds #identity and #sync, as the
reference); deletion empties the database file (store.accounts.erase_account) first and only
then removes the private keys from the key store (a failure there is logged: orphan keys sign
nothing, while keys deleted before the data would leave an account nobody can sign for).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any, Callable

from ... import errors
from ...core import events as events_core
from ...store import accounts as accounts_db
from ...store import auth as auth_db
from ...store import blocks as blocks_db
from ...store import events as events_db
from ...store import repo as repo_db
from ..auth import passwords
from .email import EmailTokens, Mailer
from ..repo.writes import iso_now
from ..auth.throttle import FailureThrottle

log = logging.getLogger("tinypds.account")

NEW_PASSWORD_MAX_LENGTH = 256  # the reference's limits
OLD_PASSWORD_MAX_LENGTH = 512
MAILS_PER_HOUR = 15  # per purpose (the reference: 15 password resets an hour)
_EMAIL_RE = re.compile(r"^[^@\s\"<>(),;:\\\[\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$")


def email_is_valid(email: str) -> bool:
    return isinstance(email, str) and len(email) <= 254 and bool(_EMAIL_RE.fullmatch(email))


def email_state(row: accounts_db.AccountRow | None) -> dict:
    """The session answers' email fields, told truthfully."""
    if row is None or not row.email:
        return {"email": None, "email_confirmed": False}
    return {"email": row.email, "email_confirmed": row.email_confirmed_at is not None}


def set_password_offline(db: Any, password: str) -> tuple[str, int]:
    """`tinypds account password`: hash (argon2id), store, and end every session (the
    refresh tokens and, with them, every access token). Returns (did, sessions ended)."""
    if not password or len(password) > NEW_PASSWORD_MAX_LENGTH:
        raise errors.InvalidRequest(f"the password must be 1 to {NEW_PASSWORD_MAX_LENGTH} characters")
    password_hash = passwords.hash_password(password)

    def txn(conn: Any) -> tuple[str, int]:
        row = accounts_db.get_account(conn)
        if row is None or row.status == "deleted":
            raise errors.AccountNotFound("this database holds no account")
        accounts_db.set_password_hash(conn, row.did, password_hash)
        return row.did, auth_db.end_every_session(conn, row.did)

    return db.write(txn)


def set_email_offline(db: Any, email: str) -> str:
    """`tinypds account email ADDRESS`: a new, unconfirmed address (outstanding email tokens
    stop working). Returns the account's DID."""
    email = email.strip()
    if not email_is_valid(email):
        raise errors.InvalidRequest(f"{email!r} is not an email address")

    def txn(conn: Any) -> str:
        row = accounts_db.get_account(conn)
        if row is None or row.status == "deleted":
            raise errors.AccountNotFound("this database holds no account")
        accounts_db.set_email(conn, row.did, email)
        EmailTokens.drop_all(conn, row.did)
        return row.did

    return db.write(txn)


class AccountLife:
    """The flows of com.atproto.server.{request,confirm}Email*, *Password*, *activate*, *Delete*.

    `auth`: services.auth.service.AuthService (password checks, throttled); `keys`: the KeyStore;
    `on_event()`: after an event row is committed; `on_account_change()`: re-read the account.
    """

    def __init__(self, settings: Any, db: Any, keys: Any, auth: Any, *, mailer: Mailer | None = None,
                 tokens: EmailTokens | None = None, on_event: Callable[[], Any] | None = None,
                 on_account_change: Callable[[], Any] | None = None, did_truth: Any = None,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.db = db
        self.keys = keys
        self.auth = auth
        self.mailer = mailer or Mailer.from_settings(settings)
        self.tokens = tokens or EmailTokens(db, clock)
        self.on_event = on_event
        self.on_account_change = on_account_change
        self.did_truth = did_truth
        self.clock = clock
        self._lock = asyncio.Lock()
        self._mails = FailureThrottle(MAILS_PER_HOUR, 3600, clock)

    # ---- helpers ------------------------------------------------------------------------------
    def account(self, did: str) -> accounts_db.AccountRow:
        row = self.db.read(lambda c: accounts_db.get_account(c, did))
        if row is None or row.status == "deleted":
            raise errors.AccountNotFound("account not found")
        return row

    def _changed(self, event: bool) -> None:
        if self.on_account_change is not None:
            self.on_account_change()
        if event and self.on_event is not None:
            self.on_event()

    async def _mail(self, row: accounts_db.AccountRow, purpose: str, to: str | None = None) -> None:
        # each request replaces the outstanding token and may send a mail: bounded, as the
        # reference's rate limits (requestPasswordReset needs no sign-in at all)
        if self._mails.blocked(purpose):
            raise errors.RateLimitExceeded("Too many emails requested; try again later")
        self._mails.record(purpose)
        token = await self.tokens.mint(row.did, purpose)
        await self.mailer.send_token(to or row.email, purpose, token, row.handle)

    # ---- email ----------------------------------------------------------------------------------
    async def request_email_confirmation(self, did: str) -> None:
        row = self.account(did)
        if not row.email:
            raise errors.InvalidRequest("account does not have an email address")
        await self._mail(row, "confirm_email")

    async def confirm_email(self, did: str, email: str, token: str) -> None:
        row = self.account(did)
        if not row.email or row.email.lower() != email.strip().lower():
            raise errors.InvalidEmail("invalid email")
        now = iso_now(self.clock())

        def txn(conn: Any) -> None:
            self.tokens.check(conn, did, "confirm_email", token)
            accounts_db.set_email_confirmed(conn, did, now)

        await self.db.awrite(txn)
        self._changed(False)

    async def request_email_update(self, did: str) -> bool:
        """tokenRequired: a confirmed address must approve its own replacement."""
        row = self.account(did)
        if not row.email:
            raise errors.InvalidRequest("account does not have an email address")
        if row.email_confirmed_at is None:
            return False
        await self._mail(row, "update_email")
        return True

    async def update_email(self, did: str, email: str, token: str | None, email_auth_factor: bool | None = None) -> None:
        email = email.strip()
        if not email_is_valid(email):
            raise errors.InvalidRequest("This email address is not supported, please use a different email.")
        if email_auth_factor:
            raise errors.InvalidRequest("Email sign-in codes are not offered by this server; "
                                        "use an authenticator app or a passkey as the second factor")
        row = self.account(did)
        if row.email_confirmed_at is not None and not token:
            raise errors.TokenRequired("confirmation token required")

        def txn(conn: Any) -> None:
            if row.email_confirmed_at is not None:
                self.tokens.check(conn, did, "update_email", token)
            accounts_db.set_email(conn, did, email)
            EmailTokens.drop_all(conn, did)

        await self.db.awrite(txn)
        self._changed(False)

    # ---- password --------------------------------------------------------------------------------
    async def request_password_reset(self, email: str) -> None:
        """No answer tells whether the address is known (the reference's behaviour)."""
        row = self.db.read(lambda c: accounts_db.get_account(c))
        if row is None or row.status == "deleted" or not row.email or row.email.lower() != email.strip().lower():
            log.info("password reset asked for an unknown address")
            return
        await self._mail(row, "reset_password")

    async def reset_password(self, token: str, password: str) -> None:
        if not isinstance(password, str) or not password or len(password) > NEW_PASSWORD_MAX_LENGTH:
            raise errors.InvalidRequest("Invalid password length.")
        row = self.db.read(lambda c: accounts_db.get_account(c))
        if row is None or row.status == "deleted":
            raise errors.InvalidToken("Token is invalid")
        self.db.read(lambda c: self.tokens.check(c, row.did, "reset_password", token, spend=False))  # before argon2
        password_hash = await self.auth.hash_password(password)

        def txn(conn: Any) -> int:
            self.tokens.check(conn, row.did, "reset_password", token)
            accounts_db.set_password_hash(conn, row.did, password_hash)
            return auth_db.end_every_session(conn, row.did)

        ended = await self.db.awrite(txn)
        log.info("password reset by token for %s; %d session(s) ended", row.did, ended)

    # ---- the account's life ----------------------------------------------------------------------------
    async def deactivate(self, did: str, delete_after: str | None = None) -> None:
        """Writes are refused from now on; the firehose hears #account (active: false)."""
        row = self.account(did)
        if row.status in ("takendown", "suspended"):
            raise errors.InvalidRequest(f"the account is {row.status}")
        now = iso_now(self.clock())

        def txn(conn: Any) -> None:
            accounts_db.set_status(conn, did, "deactivated")
            accounts_db.set_delete_after(conn, did, delete_after)
            body = events_core.account_body(did, now, False, "deactivated")
            events_db.append_event(conn, events_core.ACCOUNT, did, now, events_core.encode_body(body))

        async with self._lock:
            await self.db.awrite(txn)
        self._forget(did)
        self._changed(True)

    async def activate(self, did: str) -> None:
        """Only when the DID document names this server and its key; then #account (active),
        #identity and #sync with the current commit, in the reference's order."""
        row = self.account(did)
        if row.status in ("takendown", "suspended"):
            raise errors.AccountNotFound("user not found")
        if row.status == "offline-copy":
            raise errors.InvalidRequest("an offline copy (imported without its keys) cannot be activated")
        if self.did_truth is not None:
            self.did_truth.forget(did)
            if not await self.did_truth.valid(did):
                raise errors.InvalidRequest(f"The DID document does not name this PDS ({self.settings.public_url}) "
                                            "and its signing key yet; update it before activating the account here")
        now = iso_now(self.clock())

        def txn(conn: Any) -> None:
            current = accounts_db.get_account(conn, did)
            accounts_db.set_status(conn, did, "active")
            accounts_db.set_delete_after(conn, did, None)
            body = events_core.account_body(did, now, True)
            events_db.append_event(conn, events_core.ACCOUNT, did, now, events_core.encode_body(body))
            events_db.append_event(conn, events_core.IDENTITY, did, now, events_core.encode_body(
                events_core.identity_body(did, now, current.handle if current else None)))
            root = repo_db.get_root(conn, did)
            if root is not None:
                block = blocks_db.get_block(conn, root.commit_cid)
                sync = events_core.sync_body(did, root.commit_cid, block, root.rev, now)
                events_db.append_event(conn, events_core.SYNC, did, now, events_core.encode_body(sync))

        async with self._lock:
            await self.db.awrite(txn)
        self._changed(True)

    async def request_delete(self, did: str) -> None:
        """Mint the deletion token and mail it when email is set up (else `tinypds account
        email-token delete-account` mints one); the reference requires an email address, this
        server only needs a way for the owner to read the token."""
        row = self.account(did)
        await self._mail(row, "delete_account")

    async def delete(self, did: str, password: str, token: str, ip: str = "deleteAccount") -> None:
        """Password + token: erase the account's data from the file, write #account
        (deleted), then remove its private keys from the key store."""
        if not isinstance(password, str) or len(password) > OLD_PASSWORD_MAX_LENGTH:
            raise errors.InvalidRequest("Invalid password length.")
        row = self.db.read(lambda c: accounts_db.get_account(c, did))
        if row is None or row.status == "deleted":
            raise errors.InvalidRequest("account not found")
        try:
            await self.auth.check_password(did, password, ip)
        except errors.AccountTakedown:
            pass  # a taken-down account may still delete itself
        except errors.AuthenticationRequired:
            raise errors.AuthenticationRequired("Invalid did or password") from None
        now = iso_now(self.clock())

        def txn(conn: Any) -> list[str]:
            self.tokens.check(conn, did, "delete_account", token)
            emptied = accounts_db.erase_account(conn, did)
            body = events_core.account_body(did, now, False, "deleted")
            events_db.append_event(conn, events_core.ACCOUNT, did, now, events_core.encode_body(body))
            return emptied

        async with self._lock:
            emptied = await self.db.awrite(txn)
        removed = []
        for purpose in ("signing", "rotation"):
            try:
                if self.keys is not None and await asyncio.to_thread(self.keys.delete_key, did, purpose):
                    removed.append(purpose)
            except Exception as exc:  # noqa: BLE001 - the data is gone; say which key is left
                log.warning("account %s deleted, but its %s key could not be removed from the key store: %s",
                            did, purpose, exc)
        log.warning("account %s deleted: %d tables emptied, keys removed: %s", did, len(emptied),
                    ", ".join(removed) or "none")
        self._forget(did)
        self._changed(True)

    def _forget(self, did: str) -> None:
        if self.did_truth is not None:
            self.did_truth.forget(did)
