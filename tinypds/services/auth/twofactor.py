"""Second factors for password sign-in: TOTP with recovery codes, and passkeys (WebAuthn).

Owns enrolment, code checks and the passkey ceremonies; AuthService and the pages ask
`required(did)` / `check_code(did, code)`. Imports store.twofactor and services.auth.passwords/keys;
pyotp, qrcode and webauthn load on first use (an idle server imports none of them). Tricky
bits: the TOTP secret is sealed (SecretBox) under the key store's "twofactor" entry of the
service DID, never stored plain; a TOTP step is accepted once (compare-and-set); recovery
codes are argon2id-hashed and looked up by their first group, so a check costs one hash;
ceremony challenges live in memory for a few minutes, keyed by a random ceremony id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from typing import Any, Callable

import nacl.exceptions
import nacl.secret

from ...store import twofactor as sql
from . import passwords

log = logging.getLogger("tinypds.twofactor")

TOTP_PERIOD = 30
TOTP_DIGITS = 6
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # 32 symbols, no 0/O/1/I
_TOTP_RE = re.compile(r"^\d{6}$")
CEREMONY_TTL = 300
_MAX_CEREMONIES = 64


class TwoFactorError(ValueError):
    """A second-factor action cannot be done (wrong code, nothing to confirm, bad passkey response)."""


def normalize_code(code: str) -> str:
    """What the user typed -> digits (TOTP) or the 12 recovery symbols, spaces and dashes dropped."""
    return re.sub(r"[\s-]", "", code or "").upper()


def _recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(12))
    return "-".join(raw[i : i + 4] for i in range(0, 12, 4))


def _b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TwoFactorService:
    def __init__(self, db: Any, keys: Any, *, seal_did: str, rp_id: str, origin: str, rp_name: str = "tinypds",
                 clock: Callable[[], float] = time.time):
        self.db = db
        self.keys = keys
        self.seal_did = seal_did
        self.rp_id = rp_id
        self.origin = origin.rstrip("/")
        self.rp_name = rp_name
        self.clock = clock
        self._box_cache: nacl.secret.SecretBox | None = None
        self._ceremonies: dict[str, tuple[str, str, bytes, float]] = {}  # id -> (did, kind, challenge, expires)
        self._argon = asyncio.Semaphore(1)

    # ---- sealing ---------------------------------------------------------------------------------
    def _box(self) -> nacl.secret.SecretBox:
        if self._box_cache is None:
            from ...core.crypto import K256PrivateKey
            from ..identity.keys import KeyMissingError

            try:
                seed = self.keys.get_key(self.seal_did, "twofactor")
            except KeyMissingError:
                seed = K256PrivateKey.generate()
                self.keys.put_key(self.seal_did, "twofactor", seed)
            key = hashlib.sha256(b"tinypds totp seal v1\0" + seed.to_bytes()).digest()
            self._box_cache = nacl.secret.SecretBox(key)
        return self._box_cache

    def _seal(self, secret: str) -> bytes:
        return bytes(self._box().encrypt(secret.encode("ascii")))

    def _unseal(self, sealed: bytes) -> str:
        try:
            return self._box().decrypt(sealed).decode("ascii")
        except nacl.exceptions.CryptoError as exc:
            raise TwoFactorError("the TOTP secret cannot be unsealed (key store changed?); "
                                 "switch 2FA off with `tinypds account 2fa off` and enrol again") from exc

    # ---- state -----------------------------------------------------------------------------------
    def status(self, did: str) -> dict:
        def read(c: Any) -> dict:
            totp = sql.get_totp(c, did)
            return {
                "totp": bool(totp and totp.confirmed),
                "totp_pending": bool(totp and not totp.confirmed),
                "recovery_codes": sql.count_recovery_codes(c, did),
                "passkeys": [{"id": _b64url(p.credential_id), "name": p.name, "created_at": p.created_at,
                              "last_used_at": p.last_used_at} for p in sql.list_passkeys(c, did)],
            }
        return self.db.read(read)

    def required(self, did: str) -> bool:
        """True iff a password sign-in of `did` needs a second factor (a confirmed TOTP or a passkey)."""
        def read(c: Any) -> bool:
            totp = sql.get_totp(c, did)
            return bool(totp and totp.confirmed) or sql.count_passkeys(c, did) > 0
        return self.db.read(read)

    # ---- TOTP enrolment --------------------------------------------------------------------------
    async def totp_begin(self, did: str, account_name: str) -> dict:
        """A fresh secret (pending until confirmed): {secret, uri, qr_svg}."""
        import pyotp

        secret = pyotp.random_base32()
        sealed = self._seal(secret)
        if not await self.db.awrite(lambda c: sql.put_pending_totp(c, did, sealed, int(self.clock()))):
            raise TwoFactorError("an authenticator app is already set up; remove it first")
        uri = pyotp.TOTP(secret).provisioning_uri(name=account_name, issuer_name=self.rp_name)
        return {"secret": secret, "uri": uri, "qr_svg": qr_svg(uri)}

    async def totp_confirm(self, did: str, code: str) -> list[str]:
        """Confirm the pending secret with a current code -> recovery codes (new ones if none left)."""
        row = self.db.read(lambda c: sql.get_totp(c, did))
        if row is None or row.confirmed:
            raise TwoFactorError("there is no authenticator waiting for confirmation; start again")
        step = self._match_step(self._unseal(row.secret_sealed), normalize_code(code), 0)
        if step is None:
            raise TwoFactorError("that code is not right; check the device's clock and try the next code")
        if not await self.db.awrite(lambda c: sql.confirm_totp(c, did, step)):
            raise TwoFactorError("there is no authenticator waiting for confirmation; start again")
        return await self._ensure_recovery_codes(did)

    async def totp_remove(self, did: str) -> None:
        await self.db.awrite(lambda c: sql.delete_totp(c, did))
        await self._drop_codes_if_unused(did)

    def _match_step(self, secret: str, code: str, last_step: int) -> int | None:
        import pyotp

        if not _TOTP_RE.match(code):
            return None
        totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD)
        now_step = int(self.clock()) // TOTP_PERIOD
        for step in (now_step - 1, now_step, now_step + 1):  # one step of clock drift either way
            if step > last_step and hmac.compare_digest(totp.generate_otp(step), code):
                return step
        return None

    # ---- recovery codes --------------------------------------------------------------------------
    async def _hash(self, code: str) -> str:
        async with self._argon:
            return await asyncio.to_thread(passwords.hash_password, normalize_code(code))

    async def new_recovery_codes(self, did: str) -> list[str]:
        """Replace every recovery code with RECOVERY_CODES new ones (shown once)."""
        codes = [_recovery_code() for _ in range(RECOVERY_CODES)]
        pairs = [(normalize_code(c)[:4], await self._hash(c)) for c in codes]
        if len({lookup for lookup, _ in pairs}) != len(pairs):  # a 1-in-100k clash of first groups: draw again
            return await self.new_recovery_codes(did)
        await self.db.awrite(lambda c: sql.replace_recovery_codes(c, did, pairs, int(self.clock())))
        return codes

    async def _ensure_recovery_codes(self, did: str) -> list[str]:
        if self.db.read(lambda c: sql.count_recovery_codes(c, did)) > 0:
            return []
        return await self.new_recovery_codes(did)

    async def _drop_codes_if_unused(self, did: str) -> None:
        if not self.required(did):
            await self.db.awrite(lambda c: sql.replace_recovery_codes(c, did, [], 0))

    # ---- the check at sign-in ----------------------------------------------------------------------
    async def check_code(self, did: str, code: str) -> str | None:
        """'totp' or 'recovery' if `code` is a current TOTP code (used once) or an unused recovery
        code (consumed); None otherwise. The caller counts a None against the sign-in throttle."""
        code = normalize_code(code)
        if _TOTP_RE.match(code):
            row = self.db.read(lambda c: sql.get_totp(c, did))
            if row is None or not row.confirmed:
                return None
            try:
                secret = self._unseal(row.secret_sealed)
            except TwoFactorError as exc:  # the key store changed: recovery codes still work
                log.error("%s", exc)
                return None
            step = self._match_step(secret, code, row.last_step)
            if step is not None and await self.db.awrite(lambda c: sql.advance_totp_step(c, did, step)):
                return "totp"
            return None
        if len(code) != 12 or any(ch not in _RECOVERY_ALPHABET for ch in code):
            return None
        lookup = code[:4]
        stored = self.db.read(lambda c: sql.get_recovery_hash(c, did, lookup))
        if stored is None:
            return None
        async with self._argon:
            ok = await asyncio.to_thread(passwords.verify_password, code, stored)
        if ok and await self.db.awrite(lambda c: sql.use_recovery_code(c, did, lookup, stored)):
            return "recovery"
        return None

    async def disable_all(self, did: str) -> int:
        """Remove every second factor of `did` (the owner's recovery from loss)."""
        return await self.db.awrite(lambda c: sql.delete_all(c, did))

    # ---- passkeys (WebAuthn) -----------------------------------------------------------------------
    def _new_ceremony(self, did: str, kind: str, challenge: bytes) -> str:
        now = self.clock()
        for cid in [k for k, v in self._ceremonies.items() if v[3] <= now]:
            del self._ceremonies[cid]
        while len(self._ceremonies) >= _MAX_CEREMONIES:
            self._ceremonies.pop(next(iter(self._ceremonies)))
        cid = secrets.token_urlsafe(18)
        self._ceremonies[cid] = (did, kind, challenge, now + CEREMONY_TTL)
        return cid

    def _take_ceremony(self, cid: str, did: str, kind: str) -> bytes:
        entry = self._ceremonies.pop(cid or "", None)
        if entry is None or entry[0] != did or entry[1] != kind or entry[3] <= self.clock():
            raise TwoFactorError("the passkey request expired; try again")
        return entry[2]

    def passkey_register_options(self, did: str, user_name: str) -> tuple[str, str]:
        """(ceremony id, PublicKeyCredentialCreationOptions as JSON) for navigator.credentials.create."""
        import webauthn
        from webauthn.helpers.structs import (AuthenticatorSelectionCriteria, PublicKeyCredentialDescriptor,
                                              ResidentKeyRequirement, UserVerificationRequirement)

        existing = self.db.read(lambda c: sql.list_passkeys(c, did))
        options = webauthn.generate_registration_options(
            rp_id=self.rp_id, rp_name=self.rp_name, user_name=user_name, user_id=hashlib.sha256(did.encode()).digest()[:16],
            exclude_credentials=[PublicKeyCredentialDescriptor(id=p.credential_id) for p in existing],
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED, user_verification=UserVerificationRequirement.PREFERRED),
        )
        return self._new_ceremony(did, "register", options.challenge), webauthn.options_to_json(options)

    async def passkey_register(self, did: str, ceremony: str, credential: str, name: str) -> list[str]:
        """Store the new credential -> recovery codes if this is the first second factor (else [])."""
        import webauthn

        challenge = self._take_ceremony(ceremony, did, "register")
        name = (name or "").strip()[:100] or "Passkey"
        try:
            verified = webauthn.verify_registration_response(
                credential=credential, expected_challenge=challenge, expected_rp_id=self.rp_id, expected_origin=self.origin)
        except Exception as exc:  # the library raises several types for a bad response
            raise TwoFactorError(f"the passkey could not be registered: {exc}") from None
        try:
            transports = json.loads(credential).get("response", {}).get("transports") or []
        except (ValueError, AttributeError):
            transports = []
        row = sql.PasskeyRow(verified.credential_id, name, verified.credential_public_key, verified.sign_count,
                             json.dumps([t for t in transports if isinstance(t, str)][:8]), int(self.clock()), None)
        if not await self.db.awrite(lambda c: sql.add_passkey(c, did, row)):
            raise TwoFactorError("this passkey is already registered")
        return await self._ensure_recovery_codes(did)

    def passkey_auth_options(self, did: str) -> tuple[str, str]:
        """(ceremony id, PublicKeyCredentialRequestOptions as JSON) for navigator.credentials.get."""
        import webauthn
        from webauthn.helpers.structs import PublicKeyCredentialDescriptor, UserVerificationRequirement

        existing = self.db.read(lambda c: sql.list_passkeys(c, did))
        if not existing:
            raise TwoFactorError("no passkey is registered")
        options = webauthn.generate_authentication_options(
            rp_id=self.rp_id, user_verification=UserVerificationRequirement.PREFERRED,
            allow_credentials=[PublicKeyCredentialDescriptor(id=p.credential_id) for p in existing])
        return self._new_ceremony(did, "auth", options.challenge), webauthn.options_to_json(options)

    async def passkey_verify(self, did: str, ceremony: str, credential: str) -> bool:
        """True iff `credential` is a valid assertion by one of the account's passkeys for this ceremony."""
        import webauthn
        from webauthn.helpers import base64url_to_bytes

        try:
            challenge = self._take_ceremony(ceremony, did, "auth")
            raw_id = base64url_to_bytes(json.loads(credential)["rawId"])
        except (TwoFactorError, ValueError, KeyError, TypeError):
            return False
        row = self.db.read(lambda c: sql.get_passkey(c, did, raw_id))
        if row is None:
            return False
        try:
            verified = webauthn.verify_authentication_response(
                credential=credential, expected_challenge=challenge, expected_rp_id=self.rp_id, expected_origin=self.origin,
                credential_public_key=row.public_key, credential_current_sign_count=row.sign_count)
        except Exception:
            return False
        await self.db.awrite(lambda c: sql.touch_passkey(c, raw_id, verified.new_sign_count, int(self.clock())))
        return True

    async def passkey_remove(self, did: str, credential_id: str) -> bool:
        from webauthn.helpers import base64url_to_bytes

        try:
            raw = base64url_to_bytes(credential_id)
        except ValueError:
            return False
        removed = await self.db.awrite(lambda c: sql.delete_passkey(c, did, raw))
        await self._drop_codes_if_unused(did)
        return removed


def qr_svg(text: str) -> str:
    """An inline SVG QR code of `text` (pure Python, no image library)."""
    import qrcode
    import qrcode.image.svg

    img = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    return img.to_string(encoding="unicode")


def rp_from_public_url(public_url: str) -> tuple[str, str]:
    """(WebAuthn RP ID, expected origin) for the server's public URL."""
    from urllib.parse import urlsplit

    parts = urlsplit(public_url)
    return parts.hostname or "localhost", f"{parts.scheme}://{parts.netloc}"
