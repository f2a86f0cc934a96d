"""The local account's identity: create it (init), its own DID document, handle changes,
credentials for migration, and the PLC-operation endpoints' checks.

Builds on identity.plc (log, signing, tokens, directory) and identity.resolver (resolving
others); keys come from the KeyStore, never the database. No HTTP-server types.
Tricky bits: init stores the keys first and registers the DID at the directory before any
row is written, then writes account, identity, PLC genesis, first commit and events in ONE
transaction; every later change goes through PlcService.apply (did:plc) or one transaction
with its #identity event (did:web), so the account and the log never disagree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from ...core import plc as core_plc
from ...core.crypto import K256PrivateKey, PrivateKey, parse_did_key
from ...core.plc import PlcState
from ...core.syntax import InvalidSyntax, handle_is_allowed_for_account, parse_handle
from ...errors import AccountAlreadyExists, HandleNotAvailable, InvalidHandle, InvalidRequest, UnsupportedDomain
from ...store import accounts as accounts_db
from ...store import identity as identity_db
from . import create as account_service
from ...store.db import Database
from .resolver import DidResolver, HandleResolver, IdentityResolver, doc_handle
from .plc import PlcLogError, PlcService, record_identity_event, utc_now_iso

log = logging.getLogger("tinypds.identity")


@dataclass(frozen=True)
class NewIdentity:
    did: str
    handle: str
    method: str
    signing_key: str  # did:key
    rotation_keys: tuple[str, ...]
    plc_url: str | None
    endpoint: str


def pds_services(endpoint: str) -> dict:
    return {"atproto_pds": {"type": core_plc.ATPROTO_PDS_TYPE, "endpoint": endpoint}}


def check_new_handle(handle: str) -> str:
    try:
        handle = parse_handle(handle)
    except InvalidSyntax as exc:
        raise InvalidHandle(str(exc)) from None
    if not handle_is_allowed_for_account(handle):
        raise UnsupportedDomain(f"handles under this top-level domain are not allowed: {handle}")
    return handle


class LocalIdentity:
    """Identity operations of the one local account (`settings`: tinypds.config.Settings)."""

    def __init__(self, settings: Any, db: Any, keys: Any, plc: PlcService, resolver: IdentityResolver,
                 *, on_event: Callable[[], Any] | None = None):
        self.settings = settings
        self.db = db
        self.keys = keys
        self.plc = plc
        self.resolver = resolver
        self.on_event = on_event

    # ---- creation (tinypds init) ----------------------------------------------------------------
    async def create(self, handle: str, *, password_hash: str | None, email: str | None = None,
                     method: str = "plc", plc_url: str | None = None, recovery_key: str | None = None,
                     endpoint: str | None = None) -> NewIdentity:
        """Generate keys, make the DID (register it at `plc_url` unless None), create the account."""
        handle = check_new_handle(handle)
        if self.db.read(lambda c: accounts_db.get_account(c)) is not None:
            raise AccountAlreadyExists("this data directory already holds an account; `tinypds init` runs once")
        endpoint = endpoint or self.settings.public_url
        signing = K256PrivateKey.generate()
        signing_did = signing.public_key().did_key()
        if method == "web":
            did = self.settings.service_did
            rotation, rotation_keys, genesis, plc_url = None, (), None, None
        elif method == "plc":
            rotation = K256PrivateKey.generate()
            keys = [rotation.public_key().did_key()]
            if recovery_key:
                try:
                    parse_did_key(recovery_key)
                except ValueError:
                    raise InvalidRequest(f"--recovery-key must be a k256 or p256 did:key, not {recovery_key!r}") from None
                keys.insert(0, recovery_key)
            rotation_keys = tuple(keys)
            op = core_plc.build_atproto_operation(signing_did, handle, endpoint, rotation_keys, None)
            genesis = core_plc.sign_operation(op, rotation)
            did = core_plc.did_for_genesis(genesis)
        else:
            raise InvalidRequest(f"unknown DID method {method!r}: use plc or web")
        # keys first: a DID whose keys were lost would be unusable; orphan keys are harmless
        self.keys.put_key(did, "signing", signing)
        if rotation is not None:
            self.keys.put_key(did, "rotation", rotation)
        now = utc_now_iso()

        def rows(conn: Any) -> None:
            identity_db.create_identity(conn, did, method, signing_did, now, plc_url=plc_url,
                                        rotation_key=rotation.public_key().did_key() if rotation else None)
            # a nested write on the writer thread joins this transaction
            account_service.create_local_account(self.db, self.keys, did, handle, signing_key=signing,
                                                 email=email, password_hash=password_hash)

        try:
            if genesis is not None:
                await self.plc.create(did, genesis, plc_url, rows)
            else:
                await self.db.awrite(rows)
        except BaseException:
            if rotation is not None:  # a fresh did:plc nobody else uses: drop its keys again
                self.keys.delete_key(did, "signing")
                self.keys.delete_key(did, "rotation")
            raise
        return NewIdentity(did, handle, method, signing_did, rotation_keys, plc_url, endpoint)

    def check_keys(self) -> None:
        """At startup: the key store must hold this identity's keys (never make new ones).

        Raises KeyStoreError/KeyMissingError naming the fix when a key is missing or differs.
        """
        from .keys import KeyStoreError

        ident = self.identity()
        if ident is None:
            return
        wanted = [("signing", [ident.signing_key])]
        if ident.method == "plc":
            # an account migrating in holds its new rotation key before the DID lists it
            wanted.append(("rotation", [*self.plc.state(ident.did).rotation_keys, *filter(None, [ident.rotation_key])]))
        for purpose, allowed in wanted:
            have = self.keys.get_key(ident.did, purpose).public_key().did_key()
            if have not in allowed:
                raise KeyStoreError(
                    f"the {purpose} key in {self.keys.backend_name()} is not one {ident.did} uses ({', '.join(allowed)}); "
                    "restore the right one with `tinypds key import BACKUP`"
                )

    # ---- reading ----------------------------------------------------------------------------------
    def identity(self) -> identity_db.IdentityRow | None:
        return self.db.read(lambda c: identity_db.get_identity(c))

    def account(self) -> accounts_db.AccountRow | None:
        return self.db.read(lambda c: accounts_db.get_account(c))

    def is_local(self, did: str) -> bool:
        account = self.account()
        return account is not None and account.did == did

    def own_state(self) -> PlcState:
        """The DID state: verified from the PLC log (did:plc) or built from settings (did:web,
        or an account made without `tinypds init`, which has no identity row)."""
        ident = self.identity()
        account = self.account()
        if ident is not None and ident.method == "plc":
            return self.plc.state(ident.did)
        if account is None:
            raise PlcLogError("this server has no account yet; run `tinypds init`")
        signing = ident.signing_key if ident else self.keys.get_key(account.did, "signing").public_key().did_key()
        aka = [f"at://{account.handle}"] if account.handle else []
        return PlcState(account.did, [], {"atproto": signing}, aka, pds_services(self.settings.public_url))

    def signing_public_key(self, did: str) -> Any:
        """The public key the account's DID document names for signing (`#atproto`), as our
        local log (kept current from the directory) or our did:web document says."""
        if not self.is_local(did):
            raise KeyError(did)
        key = self.own_state().signing_key()
        if not key:
            raise KeyError(f"{did} names no signing key")
        return parse_did_key(key)

    def own_doc(self) -> dict:
        state = self.own_state()
        return core_plc.doc_from_state(state.did, state)

    def did_doc(self, did: str) -> dict:
        """The local account's DID document (describeRepo, getSession, did.json)."""
        if not self.is_local(did):
            raise InvalidRequest(f"{did} is not this server's account")
        return self.own_doc()

    # ---- resolution with the local account short-cut ----------------------------------------------------
    async def resolve_handle(self, handle: str) -> str:
        handle = parse_handle(handle)
        account = self.account()
        if account is not None and account.handle == handle:
            return account.did
        return await self.resolver.resolve_handle(handle)

    async def resolve_did(self, did: str) -> dict:
        return self.own_doc() if self.is_local(did) else await self.resolver.dids.resolve(did)

    async def resolve_identity(self, identifier: str, *, fresh: bool = False) -> dict:
        account = self.account()
        if account is not None and identifier.lower() in (account.did.lower(), (account.handle or "").lower()):
            correct = await self.handle_is_correct()
            return {"did": account.did, "handle": account.handle if correct else "handle.invalid", "didDoc": self.own_doc()}
        return await self.resolver.resolve_identity(identifier, fresh=fresh)

    def serves_handle(self, handle: str) -> bool:
        """Handles this server vouches for itself (its configured domains; .test in dev)."""
        domains = tuple(self.settings.handle_domains) + ((".test",) if getattr(self.settings, "dev_like", self.settings.dev) else ())
        return any(handle.endswith(d if d.startswith(".") else "." + d) for d in domains)

    async def handle_is_correct(self) -> bool:
        """describeRepo.handleIsCorrect: the handle resolves to us and our doc names it."""
        account = self.account()
        if account is None or not account.handle:
            return False
        if doc_handle(self.own_doc()) != account.handle:
            return False
        if self.serves_handle(account.handle):
            return True
        try:
            return await self.resolver.handles.resolve(account.handle) == account.did
        except Exception:  # resolution trouble means "not verified now", not an error
            return False

    # ---- changes ---------------------------------------------------------------------------------------------------
    async def update_handle(self, did: str, handle: str) -> None:
        """Verify `handle` points at `did`, then change the DID doc + account + #identity event."""
        handle = check_new_handle(handle)
        ident = self.identity()
        if ident is None or ident.did != did:
            raise InvalidRequest("only the local account's handle can be changed here")
        if not self.serves_handle(handle):
            self.resolver.handles.invalidate(handle)
            found = await self.resolver.handles.resolve(handle)
            if found != did:
                raise HandleNotAvailable(
                    f"{handle} does not resolve to {did}: add DNS TXT _atproto.{handle} = \"did={did}\" "
                    f"or serve {did} at https://{handle}/.well-known/atproto-did"
                )
        if ident.method == "plc":
            state = self.plc.state(did)
            if state.handle() == handle:
                return
            aka = [f"at://{handle}"] + [a for a in state.also_known_as if not a.startswith("at://")]
            await self.plc.apply(did, self.plc.sign_update(did, also_known_as=aka))
        else:
            now = utc_now_iso()

            def txn(conn: Any) -> None:
                accounts_db.set_handle(conn, did, handle)
                record_identity_event(conn, did, handle, now)

            await self.db.awrite(txn)
            if self.on_event is not None:
                self.on_event()
        self.resolver.handles.invalidate(handle)

    async def change_endpoint(self, did: str, endpoint: str) -> PlcState:
        """A PLC op pointing the DID at another PDS endpoint (did:plc only)."""
        if not endpoint.startswith(("http://", "https://")):
            raise InvalidRequest("the endpoint must be an http(s) URL")
        return await self.plc.apply(did, self.plc.sign_update(did, services={**self.plc.state(did).services,
                                                                                **pds_services(endpoint)}))

    async def rotate_rotation_key(self, did: str) -> str:
        """Replace this server's PLC rotation key with a new one; returns its did:key.

        Crash-safe in two ops: (1) the old key adds the new one next to itself, (2) the new
        key, once stored, removes the old one. Between any two steps the key store holds a
        key the directory accepts. Other rotation keys (a recovery key) keep their places.
        """
        self._require_plc(did)
        old = self.keys.get_key(did, "rotation")
        old_did = old.public_key().did_key()
        new = K256PrivateKey.generate()
        new_did = new.public_key().did_key()
        keys = self.plc.state(did).rotation_keys
        if old_did not in keys:
            raise InvalidRequest("this server's rotation key is no longer one of the DID's rotationKeys")
        if len(keys) >= 5:
            raise InvalidRequest("the DID already has 5 rotation keys; remove one first")
        at = keys.index(old_did)
        await self.plc.apply(did, self.plc.sign_update(did, rotation_keys=keys[:at] + [new_did] + keys[at:]))
        self.keys.put_key(did, "rotation", new)
        final = [k for k in self.plc.state(did).rotation_keys if k != old_did]
        op = core_plc.sign_operation(core_plc.build_update(self.plc.state(did), rotation_keys=final), new)
        await self.plc.apply(did, op, also=lambda conn, _state: identity_db.set_keys(conn, did, rotation_key=new_did))
        return new_did

    def recommended_credentials(self, did: str) -> dict:
        """getRecommendedDidCredentials: what our DID doc should hold for this server."""
        ident = self.identity()
        account = self.account()
        if ident is None or ident.did != did or account is None:
            raise InvalidRequest("no such local account")
        out: dict[str, Any] = {
            "alsoKnownAs": [f"at://{account.handle}"] if account.handle else [],
            "verificationMethods": {"atproto": self.keys.get_key(did, "signing").public_key().did_key()},
            "services": pds_services(self.settings.public_url),
        }
        if ident.method == "plc":
            out["rotationKeys"] = [self.keys.get_key(did, "rotation").public_key().did_key()]
        return out

    async def request_plc_signature(self, did: str) -> str:
        """Mint the single-use token; with no email it goes to the server log (and `tinypds plc token`)."""
        self._require_plc(did)
        token = await self.plc.mint_token(did)
        log.warning("PLC operation token for %s: %s (single use, valid 15 minutes)", did, token)
        return token

    async def sign_plc_operation(self, did: str, token: str | None, changes: dict) -> dict:
        self._require_plc(did)
        fields = {"rotationKeys": "rotation_keys", "alsoKnownAs": "also_known_as",
                  "verificationMethods": "verification_methods", "services": "services"}
        kw = {fields[k]: v for k, v in changes.items() if k in fields and v is not None}
        op = self.plc.sign_update(did, **kw)  # bad fields fail here, before the token is spent
        await self.plc.consume_token(did, token)
        return op

    async def submit_plc_operation(self, did: str, op: Any) -> None:
        """Check `op` keeps this server in charge (rotation key, signing key, endpoint, handle),
        then submit it and record it (with its #identity event)."""
        self._require_plc(did)
        if not isinstance(op, dict) or op.get("type") != "plc_operation":
            raise InvalidRequest("operation must be a signed plc_operation")
        ident = self.identity()
        account = self.account()
        if self.keys.get_key(did, "rotation").public_key().did_key() not in (op.get("rotationKeys") or []):
            raise InvalidRequest("Rotation keys do not include server's rotation key")
        svc = (op.get("services") or {}).get("atproto_pds") or {}
        if svc.get("type") != core_plc.ATPROTO_PDS_TYPE:
            raise InvalidRequest("Missing atproto_pds service")
        if svc.get("endpoint") != self.settings.public_url:
            raise InvalidRequest("Incorrect endpoint on atproto_pds service")
        if (op.get("verificationMethods") or {}).get("atproto") != ident.signing_key:
            raise InvalidRequest("Incorrect signing key")
        aka = op.get("alsoKnownAs") or []
        if account is not None and account.handle and (not aka or aka[0] != f"at://{account.handle}"):
            raise InvalidRequest("Incorrect handle in alsoKnownAs")
        await self.plc.apply(did, op)

    async def aclose(self) -> None:
        await self.plc.aclose()
        await self.resolver.aclose()

    def _require_plc(self, did: str) -> None:
        ident = self.identity()
        if ident is None or ident.did != did:
            raise InvalidRequest("no such local account")
        if ident.method != "plc":
            raise InvalidRequest("this account's DID is a did:web; PLC operations do not apply")


def build_local_identity(settings: Any, db: Any, keys: Any, *, plc_client_for: Callable | None = None,
                         handles: HandleResolver | None = None, dids: DidResolver | None = None,
                         on_event: Callable[[], Any] | None = None) -> LocalIdentity:
    """The usual wiring: resolvers on settings.plc_url, a PlcService on `db` and `keys`."""
    plc = PlcService(db, keys, client_for=plc_client_for, on_event=on_event)
    resolver = IdentityResolver(dids or DidResolver(settings.plc_url), handles or HandleResolver())
    return LocalIdentity(settings, db, keys, plc, resolver, on_event=on_event)


def open_database(settings: Any) -> Database:
    """The data directory's database (created and migrated if needed), for the CLI."""
    return Database.open(settings.db_path)


def document_signing_key(settings: Any, db: Any, did: str, *, timeout: float = 5.0,
                         network: bool = True) -> tuple[str | None, str]:
    """(did:key, where from) of the `#atproto` key the account's DID document names, for
    `tinypds verify` without private keys: the verified local PLC log for our did:plc, our
    identity record for a did:web this server hosts, else (with `network`) the document
    resolved now, within `timeout`."""
    import asyncio

    from .resolver import doc_signing_key

    ident = db.read(lambda c: identity_db.get_identity(c, did))
    if ident is not None and ident.method == "plc":
        try:
            return PlcService(db).state(did).signing_key(), "the DID document (verified local PLC log)"
        except PlcLogError as exc:
            return None, str(exc)
    if ident is not None and did == settings.service_did:
        return ident.signing_key, "the did:web document this server hosts"
    if not network:
        return None, "no local DID document"

    async def resolve() -> dict:
        resolver = DidResolver(settings.plc_url, timeout=timeout)
        try:
            return await asyncio.wait_for(resolver.resolve(did, fresh=True), timeout)
        finally:
            await resolver.aclose()

    try:
        key = doc_signing_key(asyncio.run(resolve()))
    except Exception as exc:  # noqa: BLE001 - unresolvable: say why, the caller decides
        return None, f"the DID document could not be resolved ({type(exc).__name__}: {exc})"
    return key, "the DID document (resolved now)"


def check_startup_keys(settings: Any) -> None:
    """Before serving: an existing identity's keys must be in the configured key store.

    Raises KeyStoreError / KeyMissingError (their messages name the fix); never creates keys.
    """
    from .keys import KeyStore

    if not settings.db_path.exists():
        return
    db = Database.open(settings.db_path)
    try:
        build_local_identity(settings, db, KeyStore.open(settings)).check_keys()
    finally:
        db.close()
