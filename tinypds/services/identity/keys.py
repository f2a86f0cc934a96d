"""Private keys (repo signing, PLC rotation) in the OS keyring, or a sealed file when headless.

Sole importer of `keyring`. Entries: service "tinypds", username f"{did}:{purpose}", value
the hex secret ("p256:" prefix for P-256). `SealedFile` (services/sealed_file.py) keeps
entries in a 0600 JSON file, each value sealed (pynacl SecretBox) under a 32-byte secret;
`SealedFileKeyring` is the same store as a keyring backend. Never reads
the process environment itself (keyring may read PYTHON_KEYRING_BACKEND / KEYRING_PROPERTY_*). Tricky
bits: a missing key is an error naming the fix, never a reason to generate one; the sealing
secret is only created together with a new, empty store, so entries are never orphaned;
keyring is imported only when a keyring backend is used (the file store runs without it).
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from typing import Any, Iterable

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from tinypds.core.crypto import K256PrivateKey, P256PrivateKey, PrivateKey

from .sealed_file import DEFAULT_KEY_FILE, KeyMissingError, KeyStoreError, SealedFile  # noqa: F401 (re-exported)

SERVICE = "tinypds"
PURPOSES = ("signing", "rotation", "jwt", "twofactor")  # jwt: the session-token HMAC seed of the service DID; twofactor: the seal of TOTP secrets
CREDENTIAL_NAME = "tinypds-keys"  # systemd: LoadCredential=tinypds-keys:/path/to/secret

_EXPORT_MAGIC = b"TPDSKEYS"
_EXPORT_VERSION = 1
_EXPORT_HEADER = struct.Struct(">8sBQQ16s")  # magic, version, opslimit, memlimit, salt


def _make_keyring_backend() -> type:
    import keyring.backend
    import keyring.errors

    class SealedFileKeyring(SealedFile, keyring.backend.KeyringBackend):
        """SealedFile as a keyring backend (PYTHON_KEYRING_BACKEND=tinypds.services.identity.keys.SealedFileKeyring).

        Both paths may also be set via keyring's KEYRING_PROPERTY_FILE_PATH / KEYRING_PROPERTY_SECRET_PATH.
        """

        # Negative: never auto-detected by keyring, only chosen explicitly.
        priority = -0.5  # type: ignore[assignment]
        _missing = keyring.errors.PasswordDeleteError

    SealedFileKeyring.__module__ = __name__
    SealedFileKeyring.__qualname__ = "SealedFileKeyring"
    return SealedFileKeyring


def __getattr__(name: str) -> Any:
    """`SealedFileKeyring` is built (importing keyring) on first use."""
    if name == "SealedFileKeyring":
        cls = globals()["SealedFileKeyring"] = _make_keyring_backend()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- the key store ------------------------------------------------------------------------


def _keyring_errors(name: str = "KeyringError") -> tuple[type[BaseException], ...]:
    """keyring's exception class, if keyring is loaded at all (a SealedFile never raises it)."""
    errors = sys.modules.get("keyring.errors")
    return (getattr(errors, name),) if errors is not None else ()


def _unusable(backend: Any) -> bool:
    import keyring.backends.chainer
    import keyring.backends.fail
    import keyring.backends.null

    if isinstance(backend, (keyring.backends.fail.Keyring, keyring.backends.null.Keyring)):
        return True
    if isinstance(backend, keyring.backends.chainer.ChainerBackend):
        return not backend.backends
    return False


def _encode_key(key: PrivateKey) -> str:
    if isinstance(key, K256PrivateKey):
        return key.to_bytes().hex()
    if isinstance(key, P256PrivateKey):
        return "p256:" + key.to_bytes().hex()
    raise TypeError("unsupported private key type")


def _decode_key(value: str) -> PrivateKey:
    if value.startswith("p256:"):
        return P256PrivateKey.from_bytes(bytes.fromhex(value[5:]))
    return K256PrivateKey.from_bytes(bytes.fromhex(value))


def _check(did: str, purpose: str) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"key purpose must be one of {PURPOSES}, not {purpose!r}")
    if not isinstance(did, str) or not did.startswith("did:"):
        raise ValueError(f"not a DID: {did!r}")
    return f"{did}:{purpose}"


class KeyStore:
    """Private keys by (did, purpose) on one keyring backend."""

    def __init__(self, backend: Any):
        """`backend`: a keyring backend or a SealedFile (anything with keyring's password API)."""
        self._backend = backend
        self._decoded: tuple[str, PrivateKey] | None = None  # the last stored value parsed (~30 us saved per commit)

    @classmethod
    def open(cls, settings: Any, credentials_dir: str | Path | None = None) -> "KeyStore":
        """Pick the backend from settings (`keyring_backend`: auto | system | file; `key_file`).

        auto: keyring's configured backend unless it is the fail/null one (headless), then
        the sealed file. In dev mode (`settings.dev`) with no `key_file`, the sealed file is
        DATA/keys.json, beside the database, whatever the backend setting says. `credentials_dir` (systemd's $CREDENTIALS_DIRECTORY, passed in by the
        caller) supplies the sealing secret as credential "tinypds-keys" when present.
        """
        mode = getattr(settings, "keyring_backend", "auto") or "auto"
        if mode not in ("auto", "system", "file"):
            raise KeyStoreError(f"unknown keyring backend {mode!r}: use auto, system or file")
        # a loopback hostname is served in dev mode (`tinypds serve`): the CLI must look where it does
        dev = bool(getattr(settings, "dev", False)) or bool(getattr(settings, "local_only", False))
        if dev and mode == "auto":
            mode = "file"  # a dev setup keeps its keys beside its data (see below)
        if mode != "file":
            import keyring

            system = keyring.get_keyring()
            if not _unusable(system):
                return cls(system)
            if mode == "system":
                raise KeyStoreError(
                    "no usable system keyring (headless?); set TINYPDS_KEYRING_BACKEND=file "
                    "or configure keyring (PYTHON_KEYRING_BACKEND)"
                )
        key_file = getattr(settings, "key_file", None)
        if key_file is None:
            # one rule for every command (serve, init, plc token, key export, status ...)
            key_file = Path(settings.data_dir) / "keys.json" if dev else DEFAULT_KEY_FILE
        if credentials_dir is None:
            credentials_dir = getattr(settings, "credentials_dir", None)
        secret = None
        if credentials_dir is not None and (Path(credentials_dir) / CREDENTIAL_NAME).exists():
            secret = Path(credentials_dir) / CREDENTIAL_NAME
        return cls(SealedFile(key_file, secret))

    def backend_name(self) -> str:
        b = self._backend
        if isinstance(b, SealedFile):
            return str(b)
        return f"{type(b).__module__}.{type(b).__qualname__}"

    def _get(self, username: str) -> str | None:
        try:
            return self._backend.get_password(SERVICE, username)
        except _keyring_errors() as exc:
            raise KeyStoreError(f"keyring {self.backend_name()} failed: {exc}") from exc

    def put_key(self, did: str, purpose: str, key: PrivateKey) -> None:
        username = _check(did, purpose)
        try:
            self._backend.set_password(SERVICE, username, _encode_key(key))
        except _keyring_errors() as exc:
            raise KeyStoreError(f"keyring {self.backend_name()} failed: {exc}") from exc

    def has_key(self, did: str, purpose: str) -> bool:
        return self._get(_check(did, purpose)) is not None

    def get_key(self, did: str, purpose: str) -> PrivateKey:
        """The stored key (a K256PrivateKey unless a P-256 key was stored)."""
        value = self._get(_check(did, purpose))
        if value is None:
            raise KeyMissingError(
                f"no {purpose} key for {did} in {self.backend_name()}. Restore it with "
                f"`tinypds key import BACKUP` (from `tinypds key export`), or point "
                f"TINYPDS_KEYRING_BACKEND / TINYPDS_KEY_FILE at the store that holds it."
            )
        decoded = self._decoded
        if decoded is not None and decoded[0] == value:
            return decoded[1]
        try:
            key = _decode_key(value)
        except ValueError as exc:
            raise KeyStoreError(f"the stored {purpose} key for {did} is corrupt") from exc
        self._decoded = (value, key)
        return key

    def delete_key(self, did: str, purpose: str) -> bool:
        """Remove the key; False if there was none."""
        username = _check(did, purpose)
        try:
            self._backend.delete_password(SERVICE, username)
        except (KeyError, *_keyring_errors("PasswordDeleteError")):
            return False
        except _keyring_errors() as exc:
            raise KeyStoreError(f"keyring {self.backend_name()} failed: {exc}") from exc
        return True

    # ---- passphrase-sealed backups ----------------------------------------------------

    def export_sealed(
        self,
        dids: Iterable[str],
        passphrase: str,
        opslimit: int = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        memlimit: int = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    ) -> bytes:
        """Every stored key of `dids`, sealed under `passphrase` (argon2id + SecretBox)."""
        if not passphrase:
            raise ValueError("a passphrase is required")
        entries = []
        for did in dids:
            for purpose in PURPOSES:
                value = self._get(_check(did, purpose))
                if value is not None:
                    entries.append({"did": did, "purpose": purpose, "key": value})
        if not entries:
            raise KeyMissingError("no keys to export for the given DIDs")
        salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
        header = _EXPORT_HEADER.pack(_EXPORT_MAGIC, _EXPORT_VERSION, opslimit, memlimit, salt)
        box = nacl.secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit))
        body = json.dumps({"version": _EXPORT_VERSION, "keys": entries}).encode()
        return header + bytes(box.encrypt(body))

    def import_sealed(self, blob: bytes, passphrase: str, overwrite: bool = False) -> list[tuple[str, str]]:
        """Store the keys of an `export_sealed` blob; returns the (did, purpose) pairs.

        A different key already stored for the same (did, purpose) is refused unless `overwrite`.
        """
        if len(blob) < _EXPORT_HEADER.size:
            raise ValueError("not a tinypds key backup")
        magic, version, opslimit, memlimit, salt = _EXPORT_HEADER.unpack_from(blob)
        if magic != _EXPORT_MAGIC:
            raise ValueError("not a tinypds key backup")
        if version != _EXPORT_VERSION:
            raise ValueError(f"unsupported key backup version {version}")
        if opslimit > nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE or memlimit > nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE:
            raise ValueError("key backup asks for unreasonable argon2id limits")
        box = nacl.secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit))
        try:
            doc = json.loads(box.decrypt(blob[_EXPORT_HEADER.size :]))
        except nacl.exceptions.CryptoError as exc:
            raise ValueError("wrong passphrase, or the key backup is damaged") from exc
        pairs = []
        for e in doc["keys"]:
            did, purpose, value = e["did"], e["purpose"], e["key"]
            key = _decode_key(value)  # validate before storing anything
            existing = self._get(_check(did, purpose))
            if existing is not None and existing != value and not overwrite:
                raise KeyStoreError(
                    f"a different {purpose} key for {did} is already stored; pass overwrite to replace it"
                )
            pairs.append((did, purpose, key))
        for did, purpose, key in pairs:
            self.put_key(did, purpose, key)
        return [(did, purpose) for did, purpose, _ in pairs]


def _derive(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase.encode("utf-8"), salt, opslimit=opslimit, memlimit=memlimit
    )
