"""Server side of account migration: invite codes, createAccount for an existing DID,
importRepo, activate/deactivate, deleteAccount after a move.

Services layer (no HTTP types). Tricky bits: createAccount verifies the old PDS's
service-auth token against the DID's CURRENT signing key (fresh from the directory) and
only then spends the one-time invite code, in the same transaction that writes the
account (status deactivated: no firehose events), its identity row and a copy of the
directory's PLC log. Our rotation key is not in the DID yet; it becomes so with the PLC
op the old PDS signs. Activation re-reads the directory, catches the local log up, and
writes #account, #identity and #sync in ONE transaction. deleteAccount (only when the DID
names another PDS) removes the account entirely, so a failed move in can be rolled back.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from typing import Any, AsyncIterable, Callable

from ... import errors
from ...core import events as events_core
from ...core import plc as core_plc
from ...core.crypto import K256PrivateKey, parse_did_key
from ...core.jwt import JwtError, verify_service_auth
from ...store import accounts as accounts_db
from ...store import blocks as blocks_db
from ...store import events as events_db
from ...store import identity as identity_db
from ...store import migration as migration_db
from ...store import repo as repo_db
from ..identity import create as account_service
from ..auth import passwords
from ..identity.resolver import doc_handle, doc_pds_endpoint, doc_signing_key
from ..identity.plc import PlcClient, PlcLogError, record_identity_event, utc_now_iso
from ..repo.car_io import RepoIOError, import_car
from ..repo.writes import iso_now

log = logging.getLogger("tinypds.migration")

CREATE_ACCOUNT_LXM = "com.atproto.server.createAccount"
INVITE_PURPOSE = "invite"
DELETE_PURPOSE = "delete_account"
INVITE_TTL_SECONDS = 7 * 24 * 3600
MAX_IMPORT_BYTES = 8 * 1024 ** 3  # the CAR is spooled to disk, never held in memory


def _hash(code: str) -> bytes:
    return hashlib.sha256(code.strip().encode("utf-8")).digest()


def mint_invite_code(db: Any, service_did: str, *, now: float | None = None) -> str:
    """A new one-time invite code (replacing any earlier unused one); stored hashed."""
    code = "tinypds-" + "-".join(secrets.token_hex(3) for _ in range(3))
    expires = int(time.time() if now is None else now) + INVITE_TTL_SECONDS
    db.write(lambda c: identity_db.put_token(c, service_did, INVITE_PURPOSE, _hash(code), expires))
    return code


def _peek_invite(conn: Any, service_did: str, code: str, now: int) -> None:
    found = identity_db.peek_token(conn, service_did, INVITE_PURPOSE)
    if found is None or found[1] < now or not hmac.compare_digest(found[0], _hash(code)):
        raise errors.InvalidInviteCode("Provided invite code not available (run `tinypds invite` on the server)")


def invite_ok(db: Any, service_did: str, code: str) -> bool:
    """Is `code` the server's current invite code (`tinypds invite`)? Nothing is spent."""
    try:
        db.read(lambda c: _peek_invite(c, service_did, code, int(time.time())))
    except Exception:  # noqa: BLE001  (InvalidInviteCode)
        return False
    return True


def _take_invite(conn: Any, service_did: str, code: str, now: int) -> None:
    _peek_invite(conn, service_did, code, now)
    identity_db.take_token(conn, service_did, INVITE_PURPOSE)


class MigrationService:
    """`identity`: services.identity.local.LocalIdentity; `auth`: AuthService; `on_event()`
    wakes the firehose; `on_account_change()` makes the app re-read the account row."""

    def __init__(self, settings: Any, db: Any, keys: Any, identity: Any, auth: Any, *,
                 on_event: Callable[[], Any] | None = None, on_account_change: Callable[[], Any] | None = None,
                 plc_client: PlcClient | None = None, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.db = db
        self.keys = keys
        self.identity = identity
        self.auth = auth
        self._on_event = on_event or (lambda: None)
        self._on_account_change = on_account_change or (lambda: None)
        self.plc = plc_client or PlcClient(settings.plc_url)
        self.clock = clock
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self.plc.aclose()

    def account(self) -> accounts_db.AccountRow | None:
        return self.db.read(lambda c: accounts_db.get_account(c))

    def _mine(self, did: str) -> accounts_db.AccountRow:
        account = self.account()
        if account is None or account.did != did:
            raise errors.AuthenticationRequired("Not this server's account")
        return account

    # ---- createAccount -----------------------------------------------------------------------
    async def create_account(self, *, did: str | None, handle: str, password: str | None, email: str | None,
                             invite_code: str | None, service_auth: str | None) -> dict:
        """Create the one account for an existing DID (deactivated). Returns the account dict."""
        from ..identity.local import check_new_handle

        if self.account() is not None:
            raise errors.AccountAlreadyExists("This server already holds its one account; createAccount is closed")
        if not invite_code:
            raise errors.InvalidInviteCode("An invite code is required (run `tinypds invite` on the server)")
        now = int(self.clock())
        self.db.read(lambda c: _peek_invite(c, self.settings.service_did, invite_code, now))
        if not did:
            raise errors.InvalidRequest("tinypds creates accounts only for an existing DID (migration); "
                                        "for a new identity run `tinypds init`")
        if not did.startswith("did:plc:"):
            raise errors.IncompatibleDidDoc("Only did:plc accounts can migrate to tinypds")
        if not password:
            raise errors.InvalidRequest("A password is required")
        if not service_auth:
            raise errors.AuthenticationRequired("A service-auth token from the current PDS is required for an existing DID")
        ops = await self.plc.get_log(did)
        try:
            state = core_plc.verify_operation_chain(did, ops)
        except core_plc.PlcError as exc:
            raise errors.IncompatibleDidDoc(f"the directory's log of {did} does not verify: {exc}") from None
        doc = core_plc.doc_from_state(did, state)
        signing = doc_signing_key(doc)
        try:
            payload = verify_service_auth(service_auth, lambda iss: parse_did_key(signing or ""),
                                          self.settings.service_did, CREATE_ACCOUNT_LXM, now)
        except JwtError as exc:
            raise errors.AuthenticationRequired(f"Service auth token rejected: {exc}") from None
        if payload.get("iss") != did:
            raise errors.AuthenticationRequired("Service auth token was issued for another DID")
        handle = check_new_handle(handle)
        if not (self.identity.serves_handle(handle) or doc_handle(doc) == handle):
            resolved = await self.identity.resolver.handles.resolve(handle, fresh=True)
            if resolved != did:
                raise errors.HandleNotAvailable(f"{handle} does not resolve to {did}")
        password_hash = await self.auth.hash_password(password)
        signing_key, rotation_key = K256PrivateKey.generate(), K256PrivateKey.generate()
        kept = self._kept_rotation_key(did, state)  # a key of ours the DID still lists is never replaced
        rotation_key = kept or rotation_key
        created = utc_now_iso(self.clock)

        def txn(conn: Any) -> None:
            if accounts_db.get_account(conn) is not None:
                raise errors.AccountAlreadyExists("This server already holds its one account")
            _take_invite(conn, self.settings.service_did, invite_code, now)
            identity_db.create_identity(conn, did, "plc", signing_key.public_key().did_key(), created,
                                        plc_url=self.settings.plc_url,
                                        rotation_key=rotation_key.public_key().did_key())
            for op in ops:
                identity_db.append_plc_op(conn, did, str(core_plc.operation_cid(op)), op, created)
            account_service.create_local_account(self.db, self.keys, did, handle, signing_key=signing_key,
                                                 email=email, password_hash=password_hash, status="deactivated")

        async with self._lock:  # one attempt at a time: the key store holds one key pair per DID
            if self.account() is not None:
                raise errors.AccountAlreadyExists("This server already holds its one account")
            self.keys.put_key(did, "signing", signing_key)  # keys first: an account without them is unusable
            if kept is None:
                self.keys.put_key(did, "rotation", rotation_key)
            try:
                await self.db.awrite(txn)
            except BaseException:
                if self.account() is None:  # nothing written: the fresh keys are of no use
                    self.keys.delete_key(did, "signing")
                    if kept is None:
                        self.keys.delete_key(did, "rotation")
                raise
        self._on_account_change()
        return {"did": did, "handle": handle, "didDoc": doc}

    def _kept_rotation_key(self, did: str, state: Any) -> Any:
        """Our stored rotation key for `did` if the DID still lists it (e.g. moving back here)."""
        if not self.keys.has_key(did, "rotation"):
            return None
        key = self.keys.get_key(did, "rotation")
        return key if key.public_key().did_key() in state.rotation_keys else None

    # ---- importRepo --------------------------------------------------------------------------
    async def import_repo(self, did: str, chunks: AsyncIterable[bytes]) -> Any:
        """Spool the CAR body to a temp file in the data dir, then import it (verify, re-sign)."""
        account = self._mine(did)
        if account.status not in ("active", "deactivated"):
            raise errors.InvalidRequest(f"Account is {account.status}")
        fd, path = tempfile.mkstemp(prefix="import-", suffix=".car", dir=self.settings.data_dir)
        try:
            total = 0
            with os.fdopen(fd, "wb") as fh:
                async for chunk in chunks:
                    total += len(chunk)
                    if total > MAX_IMPORT_BYTES:
                        raise errors.PayloadTooLarge(f"Repo CAR exceeds {MAX_IMPORT_BYTES} bytes")
                    fh.write(chunk)
            async with self._lock:
                with open(path, "rb") as fh:
                    try:
                        result = await asyncio.to_thread(import_car, self.db, fh, keys=self.keys)
                    except RepoIOError as exc:
                        # not a whole repo: maybe a `since` diff on top of the stored one
                        fh.seek(0)
                        try:
                            result = await asyncio.to_thread(import_car, self.db, fh, keys=self.keys, diff=True)
                        except RepoIOError:
                            raise errors.InvalidRequest(f"Invalid repo CAR: {exc}") from None
        finally:
            os.unlink(path)
        self._on_account_change()  # fresh repo service (its block cache predates the import)
        if account.status == "active":
            self._on_event()
        return result

    # ---- status changes --------------------------------------------------------------------
    async def activate(self, did: str) -> None:
        """Assert the DID now names this PDS and our key, then go active with #account, #identity, #sync."""
        self._mine(did)
        ident = self.identity.identity()
        other = ident is not None and ident.plc_url and ident.plc_url != self.settings.plc_url
        plc = PlcClient(ident.plc_url) if other else self.plc
        try:
            ops = await plc.get_log(did)
        finally:
            if plc is not self.plc:
                await plc.aclose()
        try:
            state = core_plc.verify_operation_chain(did, ops)
        except core_plc.PlcError as exc:
            raise errors.IncompatibleDidDoc(f"the directory's log of {did} does not verify: {exc}") from None
        doc = core_plc.doc_from_state(did, state)
        ours = self.keys.get_key(did, "signing").public_key().did_key()
        if doc_pds_endpoint(doc) != self.settings.public_url:
            raise errors.InvalidRequest(f"The DID document does not name this PDS ({self.settings.public_url}) yet: "
                                        f"it names {doc_pds_endpoint(doc)}; submit the PLC operation first")
        if doc_signing_key(doc) != ours:
            raise errors.InvalidRequest("The DID document does not hold this server's signing key yet")
        time_iso = utc_now_iso(self.clock)

        def txn(conn: Any) -> None:
            _catch_up_log(conn, did, ops, time_iso)
            account = accounts_db.get_account(conn, did)
            handle = state.handle()
            if handle and account.handle != handle:
                accounts_db.set_handle(conn, did, handle)
            accounts_db.set_status(conn, did, "active")
            body = events_core.account_body(did, time_iso, True)
            events_db.append_event(conn, events_core.ACCOUNT, did, time_iso, events_core.encode_body(body))
            record_identity_event(conn, did, handle, time_iso)
            root = repo_db.get_root(conn, did)
            block = blocks_db.get_block(conn, root.commit_cid)
            sync = events_core.sync_body(did, root.commit_cid, block, root.rev, time_iso)
            events_db.append_event(conn, events_core.SYNC, did, time_iso, events_core.encode_body(sync))

        async with self._lock:
            await self.db.awrite(txn)
        self._on_account_change()
        self._on_event()

    async def deactivate(self, did: str) -> None:
        """Writes refused from now on; reads answer as the lexicons say; #account emitted."""
        account = self._mine(did)
        if account.status == "deactivated":
            return
        time_iso = iso_now(self.clock())

        def txn(conn: Any) -> None:
            accounts_db.set_status(conn, did, "deactivated")
            body = events_core.account_body(did, time_iso, False, "deactivated")
            events_db.append_event(conn, events_core.ACCOUNT, did, time_iso, events_core.encode_body(body))

        async with self._lock:
            await self.db.awrite(txn)
        self._on_account_change()
        self._on_event()

    # ---- deleteAccount (after the move) ---------------------------------------------------------
    async def request_delete(self, did: str) -> str:
        """Mint the single-use deletion token (no email: logged, like the PLC token)."""
        self._mine(did)
        token = await self.identity.plc.mint_token(did, DELETE_PURPOSE)
        log.warning("account deletion token for %s: %s (single use, valid 15 minutes)", did, token)
        return token

    async def delete_account(self, did: str, password: str, token: str) -> None:
        """Delete the account once its DID document names another PDS: after a move out, or to
        roll back a move in that never switched. The server is then empty (createAccount works
        again with a new invite); the keys stay in the key store."""
        account = self._mine(did)
        ok = account.password_hash is not None and await asyncio.to_thread(
            passwords.verify_password, password, account.password_hash)
        if not ok:
            raise errors.AuthenticationRequired("Invalid did or password")
        doc = await self.identity.resolver.dids.resolve(did, fresh=True)
        if doc_pds_endpoint(doc) == self.settings.public_url:
            raise errors.InvalidRequest("The DID document still names this PDS: move the account before deleting it here")
        await self.identity.plc.consume_token(did, token, DELETE_PURPOSE)
        time_iso = iso_now(self.clock())

        def txn(conn: Any) -> None:
            migration_db.delete_account(conn, did)
            body = events_core.account_body(did, time_iso, False, "deleted")
            events_db.append_event(conn, events_core.ACCOUNT, did, time_iso, events_core.encode_body(body))

        async with self._lock:
            await self.db.awrite(txn)
        self._on_account_change()
        self._on_event()


def _catch_up_log(conn: Any, did: str, ops: list[dict], time_iso: str) -> None:
    """Append the directory's ops the local log lacks (the local log must be a prefix)."""
    local = identity_db.plc_ops(conn, did)
    remote_cids = [str(core_plc.operation_cid(op)) for op in ops]
    if [r.cid for r in local] != remote_cids[: len(local)]:
        raise PlcLogError(f"the local PLC log of {did} disagrees with the directory's")
    for op, cid in list(zip(ops, remote_cids))[len(local):]:
        identity_db.append_plc_op(conn, did, cid, op, time_iso)
    state = core_plc.verify_operation_chain(did, ops)
    if state.signing_key():
        identity_db.set_keys(conn, did, signing_key=state.signing_key())
