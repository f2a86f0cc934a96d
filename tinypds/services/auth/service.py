"""The one auth service: credentials in, AuthContext (who, with which scopes) out.

Owns legacy sessions (HS256 access/refresh JWTs, single-use rotating refresh tokens,
revocation), app passwords, and the sign-in failure throttle. Handlers only ever see
AuthContext (auth.context). Imports core, store.auth and
services.passwords; never xrpc/app. Tricky bits: argon2 runs off the event loop (and at
most two at a time); sign-in always does one argon2 verification, even for an unknown
identifier; access tokens carry the session id, so deleting the session (logout,
revoked app password) makes them unusable at once.

JWTs are HS256 under a random 32-byte secret that only this server reads (cheap to
verify on every request, and it keeps the repo signing key for commits and service auth).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import re
import secrets
import time
from typing import Any, Callable

from ...core.jwt import JwtError, decode_jwt_unverified, sign_jwt, verify_jwt
from ...errors import (AccountTakedown, AuthenticationRequired, AuthFactorTokenRequired, ExpiredToken, InvalidRequest, InvalidToken, RateLimitExceeded)
from ...store import auth as sql
from . import passwords
from .context import ACCESS_SCOPE, APP_PASS_PRIVILEGED_SCOPE, APP_PASS_SCOPE, KIND_BY_SCOPE, REFRESH_SCOPE, AuthContext
from .throttle import FailureThrottle

_APP_PASSWORD_RE = re.compile(r"^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$")
_APP_PASSWORD_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
MAX_APP_PASSWORDS = 50


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_DUMMY_HASH: list[str] = []


def _dummy_hash() -> str:
    """A hash of a random throwaway password (same parameters as real ones): an unknown
    identifier is checked against it, so sign-in costs one argon2 verification either way."""
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(passwords.hash_password(secrets.token_urlsafe(24)))
    return _DUMMY_HASH[0]


def load_jwt_secret(keys: Any, owner_did: str) -> bytes:
    """The session-JWT HMAC secret, kept in the KeyStore (never the database); made on first use.

    Stored as the "jwt" entry of `owner_did` (the service DID); the secret is a
    domain-separated hash of that entry, so the stored value is never used directly.
    """
    from ..identity import keys as keys_module
    from ...core.crypto import K256PrivateKey

    try:
        key = keys.get_key(owner_did, "jwt")
    except keys_module.KeyMissingError:
        key = K256PrivateKey.generate()
        keys.put_key(owner_did, "jwt", key)
    return hashlib.sha256(b"tinypds session jwt v1\0" + key.to_bytes()).digest()


def is_service_jwt(token: str) -> bool:
    """Signed with an account key (ES256K/ES256), not a session or OAuth token: user service auth."""
    try:
        header = decode_jwt_unverified(token)[0]
    except JwtError:
        return False
    return header.get("alg") in ("ES256K", "ES256") and header.get("typ") not in ("at+jwt", "refresh+jwt", "dpop+jwt")


def generate_app_password() -> str:
    chars = "".join(secrets.choice(_APP_PASSWORD_ALPHABET) for _ in range(16))
    return "-".join(chars[i : i + 4] for i in range(0, 16, 4))


_VERIFIED_MAX = 64  # tokens whose signature was checked, kept by AuthService (claims are re-checked each use)


class AuthService:
    """Sessions and app passwords for the accounts in `db` (apsw Database)."""

    def __init__(
        self,
        db: Any,
        *,
        service_did: str,
        jwt_secret: bytes,
        access_ttl: int = 2 * 3600,
        refresh_ttl: int = 90 * 24 * 3600,
        clock: Callable[[], float] = time.time,
        ip_limit: tuple[int, float] = (20, 300),
        account_limits: tuple[tuple[int, float], ...] = ((30, 300), (300, 86400)),
        password_concurrency: int = 2,
    ):
        if len(jwt_secret) < 32:
            raise ValueError("the JWT secret must be at least 32 bytes")
        self.db = db
        self.service_did = service_did
        self._secret = bytes(jwt_secret)
        self._verified: dict[str, tuple[Any, dict]] = {}  # token -> (typ, payload): signature already checked
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.clock = clock
        self._ip_throttle = FailureThrottle(*ip_limit, clock)
        self._account_throttles = [FailureThrottle(n, w, clock) for n, w in account_limits]
        self._argon = asyncio.Semaphore(password_concurrency)
        self._dummy_hash = _dummy_hash()  # made now (startup), so no sign-in pays for it
        self.twofactor: Any = None  # services.auth.twofactor.TwoFactorService, set by the app when 2FA is available

    # ---- password hashing off the event loop -------------------------------------------
    async def hash_password(self, password: str) -> str:
        async with self._argon:
            return await asyncio.to_thread(passwords.hash_password, password)

    async def _verify(self, password: str, password_hash: str) -> bool:
        async with self._argon:
            return await asyncio.to_thread(passwords.verify_password, password, password_hash)

    async def _dummy(self) -> str:
        return self._dummy_hash

    # ---- tokens ------------------------------------------------------------------------
    def _issue(self, did: str, session_id: str, scope: str, refresh_jti: str, now: int) -> dict[str, str]:
        access = sign_jwt(
            {"typ": "at+jwt"},
            {"scope": scope, "sub": did, "aud": self.service_did, "iat": now, "exp": now + self.access_ttl, "sid": session_id},
            self._secret,
        )
        refresh = sign_jwt(
            {"typ": "refresh+jwt"},
            {
                "scope": REFRESH_SCOPE,
                "sub": did,
                "aud": self.service_did,
                "iat": now,
                "exp": now + self.refresh_ttl,
                "jti": refresh_jti,
                "sid": session_id,
            },
            self._secret,
        )
        return {"accessJwt": access, "refreshJwt": refresh}

    def _claims(self, token: str, typ: str) -> dict:
        verified = self._verified.get(token)  # a client reuses its token: skip re-parsing and the HMAC
        if verified is None:
            try:
                header, _, _, _ = decode_jwt_unverified(token)
                payload = verify_jwt(token, self._secret)
            except JwtError:
                raise InvalidToken("Token could not be verified") from None
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            verified = self._verified[token] = (header.get("typ"), payload)
        token_typ, payload = verified
        if token_typ != typ:
            raise InvalidToken("Invalid token type")
        exp = payload.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise InvalidToken("Token could not be verified")
        if exp <= self.clock():
            raise ExpiredToken("Token has expired")
        if payload.get("aud") != self.service_did:
            raise InvalidToken("Token has the wrong audience")
        if not isinstance(payload.get("sub"), str) or not isinstance(payload.get("sid"), str):
            raise InvalidToken("Token could not be verified")
        return payload

    @staticmethod
    def _scope_for(session: sql.SessionRow) -> str:
        if session.app_password_name is None:
            return ACCESS_SCOPE
        return APP_PASS_PRIVILEGED_SCOPE if session.privileged else APP_PASS_SCOPE

    async def verify_access(self, token: str, *, privileged: bool = False, full: bool = False) -> AuthContext:
        """AuthContext for an access token; `full` refuses app passwords, `privileged` unprivileged ones."""
        payload = self._claims(token, "at+jwt")
        kind = KIND_BY_SCOPE.get(payload.get("scope"))
        if kind is None:
            raise InvalidToken("Bad token scope")
        sid = payload["sid"]
        now = int(self.clock())
        if not self.db.read(lambda c: sql.session_exists(c, sid, now)):
            raise ExpiredToken("Token has been revoked")
        if (full and kind != "access") or (privileged and kind == "app_password"):
            raise InvalidToken("Bad token scope")
        return AuthContext(did=payload["sub"], kind=kind, scopes=frozenset({payload["scope"]}), session_id=sid)

    async def verify_refresh(self, token: str) -> AuthContext:
        payload = self._claims(token, "refresh+jwt")
        if payload.get("scope") != REFRESH_SCOPE or not isinstance(payload.get("jti"), str):
            raise InvalidToken("Bad token scope")
        sid, jti = payload["sid"], payload["jti"]
        session = self.db.read(lambda c: sql.get_session(c, sid))
        if session is None or session.refresh_jti != jti or session.expires_at <= self.clock():
            raise ExpiredToken("Token has been revoked")
        return AuthContext(did=payload["sub"], kind="refresh", scopes=frozenset({REFRESH_SCOPE}), session_id=sid, token_id=jti)

    # ---- sessions ----------------------------------------------------------------------
    def _check_throttle(self, ip: str, account_key: str) -> None:
        if self._ip_throttle.blocked(ip) or any(t.blocked(account_key) for t in self._account_throttles):
            raise RateLimitExceeded("Too many failed sign-in attempts; try again later")

    def _record_failure(self, ip: str, account_key: str) -> None:
        self._ip_throttle.record(ip)
        for t in self._account_throttles:
            t.record(account_key)

    async def check_password(self, identifier: str, password: str, ip: str) -> dict:
        """The account for the account password (not app passwords), throttled like
        createSession; for the OAuth sign-in page. AuthenticationRequired / RateLimitExceeded."""
        row = self.db.read(lambda c: sql.find_account_for_login(c, identifier))
        account_key = row[0] if row else "ident:" + identifier.lower()
        self._check_throttle(ip, account_key)
        usable = row is not None and row[3] is not None and row[4] != "deleted"
        if not await self._verify(password, row[3] if usable else await self._dummy()) or not usable:
            self._record_failure(ip, account_key)
            raise AuthenticationRequired("Invalid identifier or password")
        if row[4] == "takendown":
            raise AccountTakedown("Account has been taken down")
        return {"did": row[0], "handle": row[1], "email": row[2], "status": row[4]}

    def second_factor_required(self, did: str) -> bool:
        return self.twofactor is not None and self.twofactor.required(did)

    async def check_second_factor(self, did: str, code: str, ip: str) -> str:
        """A TOTP or recovery code for `did`, counted against the sign-in throttle like a
        password -> 'totp' | 'recovery'. InvalidToken ("Token is invalid", the words the
        Bluesky app recognises) or RateLimitExceeded."""
        self._check_throttle(ip, did)
        used = await self.twofactor.check_code(did, code) if self.twofactor is not None else None
        if used is None:
            self._record_failure(ip, did)
            raise InvalidToken("Token is invalid")
        return used

    async def check_passkey(self, did: str, ceremony: str, credential: str, ip: str) -> None:
        """A passkey assertion as the second factor, throttled like a code. InvalidToken or
        RateLimitExceeded."""
        self._check_throttle(ip, did)
        if self.twofactor is None or not await self.twofactor.passkey_verify(did, ceremony, credential):
            self._record_failure(ip, did)
            raise InvalidToken("The passkey was not accepted")

    async def create_session(self, identifier: str, password: str, ip: str,
                             auth_factor_token: str | None = None) -> tuple[dict, dict]:
        """Sign in with the account password or an app password -> (account, tokens).
        With a second factor on, the account password also needs `auth_factor_token`
        (AuthFactorTokenRequired without one); app passwords skip it."""
        row = self.db.read(lambda c: sql.find_account_for_login(c, identifier))
        account_key = row[0] if row else "ident:" + identifier.lower()
        self._check_throttle(ip, account_key)
        usable = row is not None and row[3] is not None and row[4] != "deleted"
        ok = await self._verify(password, row[3] if usable else await self._dummy())
        app_pw: sql.AppPasswordRow | None = None
        if usable and not ok and _APP_PASSWORD_RE.match(password):
            for candidate in self.db.read(lambda c: sql.list_app_passwords(c, row[0])):
                if await self._verify(password, candidate.password_hash):
                    app_pw = candidate
                    break
        if not usable or not (ok or app_pw):
            self._record_failure(ip, account_key)
            raise AuthenticationRequired("Invalid identifier or password")
        did, handle, email, _, status = row
        if status == "takendown":
            raise AccountTakedown("Account has been taken down")
        if app_pw is None and self.second_factor_required(did):
            if not auth_factor_token:
                raise AuthFactorTokenRequired("Enter the code from your authenticator app (or a recovery code)")
            await self.check_second_factor(did, auth_factor_token, ip)
        now = int(self.clock())
        session = sql.SessionRow(
            id=secrets.token_urlsafe(18),
            did=did,
            app_password_name=app_pw.name if app_pw else None,
            privileged=bool(app_pw and app_pw.privileged),
            refresh_jti=secrets.token_urlsafe(24),
            created_at=now,
            refreshed_at=now,
            expires_at=now + self.refresh_ttl,
        )

        def write(conn: Any) -> None:
            sql.delete_expired_sessions(conn, now)
            sql.insert_session(conn, session)

        await self.db.awrite(write)
        tokens = self._issue(did, session.id, self._scope_for(session), session.refresh_jti, now)
        return {"did": did, "handle": handle, "email": email, "status": status,
                "email_confirmed": self.email_confirmed(did)}, tokens

    async def issue_session(self, did: str) -> dict:
        """Tokens of a new full session for an owner already signed in elsewhere (the account
        page's "move to another PDS", which drives this server over XRPC like the CLI does)."""
        now = int(self.clock())
        session = sql.SessionRow(id=secrets.token_urlsafe(18), did=did, app_password_name=None, privileged=False,
                                 refresh_jti=secrets.token_urlsafe(24), created_at=now, refreshed_at=now,
                                 expires_at=now + self.refresh_ttl)
        await self.db.awrite(lambda c: sql.insert_session(c, session))
        return self._issue(did, session.id, ACCESS_SCOPE, session.refresh_jti, now)

    async def refresh_session(self, ctx: AuthContext) -> tuple[dict, dict]:
        """Rotate: the presented refresh token becomes unusable, a new pair is issued."""
        if ctx.kind != "refresh" or ctx.session_id is None or ctx.token_id is None:
            raise InvalidToken("Bad token scope")
        now = int(self.clock())
        new_jti = secrets.token_urlsafe(24)
        sid, old = ctx.session_id, ctx.token_id

        def write(conn: Any) -> sql.SessionRow | None:
            if not sql.rotate_refresh(conn, sid, old, new_jti, now, now + self.refresh_ttl):
                return None
            return sql.get_session(conn, sid)

        session = await self.db.awrite(write)
        if session is None:
            raise ExpiredToken("Token has been revoked")
        account = await self.account_for(ctx)
        if account.get("status") == "takendown":
            raise AccountTakedown("Account has been taken down")
        return account, self._issue(ctx.did, sid, self._scope_for(session), new_jti, now)

    async def delete_session(self, ctx: AuthContext) -> None:
        """Logout: the refresh token and every access token of the session stop working."""
        sid = ctx.session_id
        if sid is None:
            raise InvalidToken("Bad token scope")
        await self.db.awrite(lambda c: sql.delete_session(c, sid))

    async def account_for(self, ctx: AuthContext) -> dict:
        row = self.db.read(lambda c: sql.find_account_for_login(c, ctx.did))
        if row is None:
            raise AuthenticationRequired("Account not found")
        did, handle, email, _, status = row
        return {"did": did, "handle": handle, "email": email, "status": status, "email_confirmed": self.email_confirmed(did)}

    def email_confirmed(self, did: str) -> bool:
        """Session answers tell emailConfirmed truthfully (store.accounts.email_confirmed_at)."""
        from ...store import accounts as accounts_db

        row = self.db.read(lambda c: accounts_db.get_account(c, did))
        return bool(row is not None and row.email and row.email_confirmed_at)

    # ---- app passwords -----------------------------------------------------------------
    async def create_app_password(self, ctx: AuthContext, name: str, privileged: bool) -> dict:
        if not ctx.is_full_session:
            raise InvalidToken("Bad token scope")
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidRequest("App password name must be 1 to 200 characters")
        password = generate_app_password()
        row = sql.AppPasswordRow(name=name, password_hash=await self.hash_password(password), privileged=privileged, created_at=_iso(self.clock()))

        def write(conn: Any) -> bool:
            if sql.count_app_passwords(conn, ctx.did) >= MAX_APP_PASSWORDS:
                raise InvalidRequest(f"Too many app passwords (at most {MAX_APP_PASSWORDS})")
            return sql.insert_app_password(conn, ctx.did, row)

        if not await self.db.awrite(write):
            raise InvalidRequest("A user already has an app password with this name")
        return {"name": name, "password": password, "createdAt": row.created_at, "privileged": privileged}

    async def list_app_passwords(self, ctx: AuthContext) -> list[dict]:
        rows = self.db.read(lambda c: sql.list_app_passwords(c, ctx.did))
        return [{"name": r.name, "createdAt": r.created_at, "privileged": r.privileged} for r in rows]

    async def revoke_app_password(self, ctx: AuthContext, name: str) -> None:
        """Delete it and sign out every session that used it (idempotent)."""
        if not ctx.is_full_session:
            raise InvalidToken("Bad token scope")
        await self.db.awrite(lambda c: sql.delete_app_password(c, ctx.did, name))

    def list_sessions(self, did: str) -> list[dict]:
        """Live legacy sessions (password and app-password sign-ins) for the account page."""
        rows = self.db.read(lambda c: sql.list_sessions(c, did, int(self.clock())))
        return [{"id": r.id, "app_password": r.app_password_name, "privileged": r.privileged,
                 "created_at": r.created_at, "last_used_at": r.refreshed_at} for r in rows]

    async def revoke_session(self, did: str, session_id: str) -> bool:
        """Sign one session out (its refresh and access tokens stop working at once)."""
        return await self.db.awrite(lambda c: sql.delete_did_session(c, did, session_id))

    # ---- user service auth (the video service uploading back with the user's token) ----------
    def verify_user_service_auth(self, token: str, *, did: str, lxm: str, signing_key: Callable[[str], Any]) -> AuthContext:
        """A service-auth JWT this account minted for ITSELF (getServiceAuth, aud = this
        server's service DID) and method `lxm`: signed by the account's current signing key
        (`signing_key(did)`: the public key its DID document names), unexpired; it may be
        presented again while valid (a video service retries uploads). InvalidToken otherwise."""
        from ...core.jwt import verify_service_auth

        try:
            header, payload, _, _ = decode_jwt_unverified(token)
        except JwtError:
            raise InvalidToken("Token could not be verified") from None
        if payload.get("iss") != did:
            raise InvalidToken("Service auth token is not from this server's account")
        if not isinstance(payload.get("lxm"), str):
            raise InvalidToken("Service auth token must name the method (lxm)")
        try:
            # the Bluesky app names us `did:web:` + the PDS URL's host, which keeps a port's ':' as is
            auds = {self.service_did, "did:web:" + self.service_did[len("did:web:"):].replace("%3A", ":")}
            verify_service_auth(token, signing_key, auds, lxm, int(self.clock()))
        except JwtError as exc:
            if "expired" in str(exc):
                raise ExpiredToken("Token has expired") from None
            raise InvalidToken(f"Service auth token rejected: {exc}") from None
        return AuthContext(did=did, kind="service", scopes=frozenset({lxm}))

    async def revoke_all_sessions(self, did: str) -> int:
        """Sign out everywhere (e.g. after a password change)."""
        return await self.db.awrite(lambda c: sql.delete_sessions(c, did, all_sessions=True))
