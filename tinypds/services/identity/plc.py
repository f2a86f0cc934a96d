"""did:plc for the local account: the directory client, the local PLC log, signed updates, tokens.

Owns talking to a PLC directory (submit an op; read a DID's document, log, audit log, data),
the bounded HTTP fetch and lazily made client every identity lookup uses, appending ops to
the local log in SQLite, signing later ops with our rotation key (from the KeyStore) and the
single-use tokens of requestPlcOperationSignature. Never imports keyring/apsw/HTTP-server types.
Tricky bits: an op is checked against the local log (prev + current rotation keys) BEFORE it
is submitted, and written locally only AFTER the directory accepted it, in one transaction
with the account change and its #identity event, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from ...core import events as core_events
from ...core import plc as core_plc
from ...core.plc import PlcError, PlcState
from ...errors import DidNotFound, ExpiredToken, InvalidRequest, InvalidToken, UpstreamFailure, UpstreamTimeout
from ...store import accounts as accounts_db
from ...store import events as events_db
from ...store import identity as identity_db

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("tinypds.plc")

DEFAULT_TIMEOUT = 10.0
MAX_RESPONSE_BYTES = 1024 * 1024  # a DID's audit log is small; anything bigger is garbage
TOKEN_TTL_SECONDS = 15 * 60
PLC_TOKEN_PURPOSE = "plc_operation"
_TOKEN_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


class DidDeactivated(InvalidRequest):
    """The DID existed but is deactivated (PLC answers 410 Gone)."""


class DirectoryRejected(InvalidRequest):
    """The PLC directory refused an operation (4xx); the message is the directory's."""


class PlcLogError(InvalidRequest):
    """The local PLC log is missing or does not verify."""


def utc_now_iso(clock: Callable[[], float] = time.time) -> str:
    return datetime.fromtimestamp(clock(), timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- bounded HTTP ------------------------------------------------------------------------


async def fetch_capped(
    client: httpx.AsyncClient, method: str, url: str, *, what: str, max_bytes: int = MAX_RESPONSE_BYTES, **kw: Any
) -> tuple[int, bytes]:
    """(status, body) of one request; the body is read with a byte cap.

    Network failures raise UpstreamFailure, timeouts UpstreamTimeout, both naming `what`.
    """
    import httpx  # already loaded: `client` is an httpx client

    try:
        async with client.stream(method, url, **kw) as resp:
            chunks: list[bytes] = []
            total = 0
            async for chunk in resp.aiter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise UpstreamFailure(f"{what} answered more than {max_bytes} bytes")
                chunks.append(chunk)
            return resp.status_code, b"".join(chunks)
    except httpx.TimeoutException:
        raise UpstreamTimeout(f"{what} did not answer in time ({url})") from None
    except httpx.HTTPError as exc:
        raise UpstreamFailure(f"{what} is unreachable ({url}): {type(exc).__name__}") from None


class LazyHttpClient:
    """Base for outbound clients: uses the httpx client given, else makes one on first use
    (with `http_options`) and closes it in `aclose` — a given client belongs to the caller.
    httpx itself is imported only then, so an idle server never loads it."""

    http_options: dict[str, Any] = {"follow_redirects": False}

    def __init__(self, client: httpx.AsyncClient | None, timeout: float):
        self._client = client
        self._own = client is None
        self._timeout = timeout

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self._timeout, **self.http_options)
        return self._client

    async def aclose(self) -> None:
        if self._own and self._client is not None:
            await self._client.aclose()
            self._client = None


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("message"), str):
            return doc["message"][:300]
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace") or "(no message)"


# ---- the directory client ------------------------------------------------------------------


class PlcClient(LazyHttpClient):
    """A PLC directory (`https://plc.directory` or a local one) over HTTP."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT, client: httpx.AsyncClient | None = None):
        super().__init__(client, timeout)
        self.base_url = base_url.rstrip("/")

    def _what(self) -> str:
        return f"the PLC directory {self.base_url}"

    async def submit(self, did: str, op: dict) -> None:
        """POST a signed op; DirectoryRejected on 4xx, UpstreamFailure when down or broken."""
        status, body = await fetch_capped(self._http(), "POST", f"{self.base_url}/{did}", what=self._what(), json=op)
        if 200 <= status < 300:
            return
        if 400 <= status < 500:
            raise DirectoryRejected(f"{self._what()} refused the operation: {_message(body)}")
        raise UpstreamFailure(f"{self._what()} failed with HTTP {status}: {_message(body)}")

    async def _get_json(self, did: str, suffix: str = "") -> Any:
        status, body = await fetch_capped(self._http(), "GET", f"{self.base_url}/{did}{suffix}", what=self._what())
        if status == 404:
            raise DidNotFound(f"{did} is not registered at {self.base_url}")
        if status == 410:
            raise DidDeactivated(f"{did} is deactivated (tombstoned) at {self.base_url}")
        if status != 200:
            raise UpstreamFailure(f"{self._what()} answered HTTP {status}: {_message(body)}")
        try:
            return json.loads(body)
        except ValueError:
            raise UpstreamFailure(f"{self._what()} answered something that is not JSON") from None

    async def get_document(self, did: str) -> dict:
        doc = await self._get_json(did)
        if not isinstance(doc, dict) or doc.get("id") != did:
            raise UpstreamFailure(f"{self._what()} answered a document that is not {did}'s")
        return doc

    async def get_log(self, did: str) -> list[dict]:
        ops = await self._get_json(did, "/log")
        if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
            raise UpstreamFailure(f"{self._what()} answered a log that is not a list of operations")
        return ops

    async def get_audit_log(self, did: str) -> list[dict]:
        entries = await self._get_json(did, "/log/audit")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise UpstreamFailure(f"{self._what()} answered an audit log that is not a list")
        return entries

    async def get_data(self, did: str) -> dict:
        data = await self._get_json(did, "/data")
        if not isinstance(data, dict):
            raise UpstreamFailure(f"{self._what()} answered DID data that is not an object")
        return data


# ---- events ----------------------------------------------------------------------------------


def record_identity_event(conn: Any, did: str, handle: str | None, time_iso: str) -> int:
    """Append an #identity event row (call inside the write transaction of the change)."""
    body = core_events.identity_body(did, time_iso, handle)
    return events_db.append_event(conn, core_events.IDENTITY, did, time_iso, core_events.encode_body(body))


# ---- the local DID's PLC operations ---------------------------------------------------------------


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.strip().upper().encode("utf-8")).digest()


class PlcService:
    """The local account's did:plc: its log in SQLite, signing with our rotation key, submitting.

    `db`: store Database; `keys`: identity.keys.KeyStore (may be None for read-only use);
    `client_for(url)`: a PlcClient factory (tests inject one); `on_event()`: called after an
    event row is committed (wakes the firehose).
    """

    def __init__(
        self,
        db: Any,
        keys: Any = None,
        *,
        client_for: Callable[[str], PlcClient] | None = None,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[], Any] | None = None,
    ):
        self.db = db
        self.keys = keys
        self._clients: dict[str, PlcClient] = {}
        self._client_for = client_for or (lambda url: PlcClient(url))
        self._clock = clock
        self.on_event = on_event
        self._lock = asyncio.Lock()

    def client(self, url: str) -> PlcClient:
        if url not in self._clients:
            self._clients[url] = self._client_for(url)
        return self._clients[url]

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()

    # -- reading and verifying the local log --
    def identity(self, did: str | None = None) -> identity_db.IdentityRow:
        row = self.db.read(lambda c: identity_db.get_identity(c, did))
        if row is None:
            raise PlcLogError("this server has no identity yet; run `tinypds init`" if did is None else f"{did} is not a local DID")
        return row

    def ops(self, did: str) -> list[identity_db.PlcLogRow]:
        return self.db.read(lambda c: identity_db.plc_ops(c, did), snapshot=True)

    def state(self, did: str) -> PlcState:
        """The DID's current state, verified from the local log (genesis hash, every sig, every prev)."""
        rows = self.ops(did)
        if not rows:
            raise PlcLogError(f"the local PLC log of {did} is empty")
        for row in rows:
            if str(core_plc.operation_cid(row.operation)) != row.cid:
                raise PlcLogError(f"local PLC log entry {row.seq} does not match its CID {row.cid}")
        try:
            return core_plc.verify_operation_chain(did, [r.operation for r in rows])
        except PlcError as exc:
            raise PlcLogError(f"the local PLC log of {did} does not verify: {exc}") from None

    async def compare_with_directory(self, did: str) -> list[str]:
        """Differences between the local log and the directory's (empty list = same)."""
        ident = self.identity(did)
        if not ident.plc_url:
            return ["this DID is kept in the local log only (no PLC directory configured)"]
        remote = await self.client(ident.plc_url).get_log(did)
        local = [r.operation for r in self.ops(did)]
        problems = []
        if len(remote) != len(local):
            problems.append(f"the directory has {len(remote)} operations, the local log {len(local)}")
        for i, (a, b) in enumerate(zip(local, remote)):
            if core_plc.operation_cid(a) != core_plc.operation_cid(b):
                problems.append(f"operation {i} differs from the directory's")
        try:
            audited = core_plc.verify_audit_log(did, await self.client(ident.plc_url).get_audit_log(did))
            if local and audited.prev != str(core_plc.operation_cid(local[-1])):
                problems.append("the directory's audit log ends at another operation than the local log")
        except PlcError as exc:
            problems.append(f"the directory's audit log does not verify: {exc}")
        return problems

    # -- building, applying --
    def sign_update(self, did: str, **changes: Any) -> dict:
        """A signed op following the current state with `changes` (see core.plc.build_update)."""
        state = self.state(did)
        key = self.keys.get_key(did, "rotation")
        if key.public_key().did_key() not in state.rotation_keys:
            raise InvalidRequest("this server's rotation key is no longer one of the DID's rotationKeys")
        try:
            op = core_plc.build_update(state, **changes)
        except PlcError as exc:
            raise InvalidRequest(f"invalid PLC operation: {exc}") from None
        return core_plc.sign_operation(op, key)

    async def create(self, did: str, genesis: dict, plc_url: str | None, also: Callable[[Any], Any]) -> None:
        """Register a genesis op (at `plc_url` unless None) and write it with `also(conn)` in one txn."""
        try:
            core_plc.verify_genesis(did, genesis)
        except PlcError as exc:
            raise InvalidRequest(f"invalid genesis operation: {exc}") from None
        if plc_url:
            await self.client(plc_url).submit(did, genesis)
        now = utc_now_iso(self._clock)

        def txn(conn: Any) -> None:
            identity_db.append_plc_op(conn, did, str(core_plc.operation_cid(genesis)), genesis, now)
            also(conn)

        await self.db.awrite(txn)

    async def apply(self, did: str, signed_op: dict, also: Callable[[Any, PlcState], Any] | None = None) -> PlcState:
        """Check `signed_op` against the local log, submit it, then write it + the account's handle
        + an #identity event (+ `also(conn, new_state)`) in one transaction."""
        async with self._lock:
            ident = self.identity(did)
            state = self.state(did)
            try:
                new_state = core_plc.apply_operation(state, signed_op)
            except PlcError as exc:
                raise InvalidRequest(f"invalid PLC operation: {exc}") from None
            if new_state.tombstoned:
                raise InvalidRequest("tombstoning the DID is not supported here")
            if ident.plc_url:
                await self.client(ident.plc_url).submit(did, signed_op)
            now = utc_now_iso(self._clock)
            cid = str(core_plc.operation_cid(signed_op))

            def txn(conn: Any) -> None:
                last = identity_db.last_plc_op(conn, did)
                if last is None or last.cid != state.prev:
                    raise PlcLogError("the local PLC log changed meanwhile; try again")
                identity_db.append_plc_op(conn, did, cid, signed_op, now)
                signing = new_state.signing_key()
                if signing and signing != ident.signing_key:
                    identity_db.set_keys(conn, did, signing_key=signing)
                account = accounts_db.get_account(conn, did)
                handle = new_state.handle()
                if account is not None and handle and account.handle != handle:
                    accounts_db.set_handle(conn, did, handle)
                if also is not None:
                    also(conn, new_state)
                record_identity_event(conn, did, handle, now)

            await self.db.awrite(txn)
        if self.on_event is not None:
            self.on_event()
        return new_state

    async def learn_from_directory(self, did: str) -> PlcState | None:
        """The directory's newer ops, verified, appended to the local log (services.plc_learn)."""
        from .plc_learn import learn_from_directory

        return await learn_from_directory(self, did)

    # -- single-use tokens (requestPlcOperationSignature) --
    async def mint_token(self, did: str, purpose: str = PLC_TOKEN_PURPOSE) -> str:
        """A new token (replacing any outstanding one), valid TOKEN_TTL_SECONDS, stored hashed."""
        raw = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(10))
        token = f"{raw[:5]}-{raw[5:]}"
        expires = int(self._clock()) + TOKEN_TTL_SECONDS
        await self.db.awrite(lambda c: identity_db.put_token(c, did, purpose, _token_hash(token), expires))
        return token

    async def consume_token(self, did: str, token: str | None, purpose: str = PLC_TOKEN_PURPOSE) -> None:
        """Accept `token` once; InvalidToken if wrong or absent, ExpiredToken if too old."""
        if not token:
            raise InvalidRequest("a token is required (see requestPlcOperationSignature / `tinypds plc token`)")
        wanted = _token_hash(token)
        now = int(self._clock())

        def txn(conn: Any) -> str:
            found = identity_db.peek_token(conn, did, purpose)
            if found is None:
                return "missing"
            stored, expires = found
            if expires < now:
                identity_db.take_token(conn, did, purpose)
                return "expired"
            if not hmac.compare_digest(stored, wanted):
                return "wrong"
            identity_db.take_token(conn, did, purpose)
            return "ok"

        outcome = await self.db.awrite(txn)
        if outcome == "expired":
            raise ExpiredToken("Token is expired; request a new one")
        if outcome != "ok":
            raise InvalidToken("Token is invalid")
