"""Private keys (repo signing, PLC rotation) in the OS keyring, or a sealed file when headless.

Sole importer of `keyring`. Entries: service "tinypds", username f"{did}:{purpose}", value
the hex secret ("p256:" prefix for P-256). `SealedFile` keeps entries in a 0600 JSON file,
each value sealed (pynacl SecretBox) under a 32-byte secret from a 0600 file beside it or a
systemd credential; `SealedFileKeyring` is the same store as a keyring backend. Never reads
os.environ itself (keyring may read PYTHON_KEYRING_BACKEND / KEYRING_PROPERTY_*). Tricky
bits: a missing key is an error naming the fix, never a reason to generate one; the sealing
secret is only created together with a new, empty store, so entries are never orphaned;
keyring is imported only when a keyring backend is used (the file store runs without it).
"""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any, Iterable

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from tinypds.core.crypto import K256PrivateKey, P256PrivateKey, PrivateKey

SERVICE = "tinypds"
PURPOSES = ("signing", "rotation", "jwt")  # jwt: the session-token HMAC seed of the service DID
DEFAULT_KEY_FILE = "~/.config/tinypds/keys.json"
CREDENTIAL_NAME = "tinypds-keys"  # systemd: LoadCredential=tinypds-keys:/path/to/secret

_EXPORT_MAGIC = b"TPDSKEYS"
_EXPORT_VERSION = 1
_EXPORT_HEADER = struct.Struct(">8sBQQ16s")  # magic, version, opslimit, memlimit, salt


class KeyStoreError(RuntimeError):
    """The key store cannot be opened, read or written; the message names the fix."""


class KeyMissingError(KeyStoreError, LookupError):
    """No key stored for (did, purpose)."""


# ---- the sealed-file keyring backend --------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Atomically replace `path` with `data`, mode 0600, parent dir 0700 if created."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _read_private(path: Path, what: str) -> bytes:
    st = path.stat()
    if st.st_mode & 0o007:
        raise KeyStoreError(f"{what} {path} is accessible to other users; run: chmod 600 {path}")
    return path.read_bytes()


class SealedFile:
    """The headless key store: one 0600 JSON file of sealed entries, with keyring's
    get/set/delete_password API but without importing keyring (its import costs ~3.4 MB of
    RSS, a lot on a Pi). `SealedFileKeyring` is the same store as a real keyring backend.

    `file_path`: the entries file. `secret_path`: the 32-byte sealing secret (hex); default
    `<file_path>.secret` beside it, or a systemd credential file.
    """

    def __init__(self, file_path: str | Path | None = None, secret_path: str | Path | None = None):
        self.file_path = file_path or DEFAULT_KEY_FILE
        self.secret_path = secret_path
        # the last entry unsealed, keyed by both files' stat (a rewrite is a new inode): a repo
        # commit reads its signing key each time, and unsealing costs ~0.1 ms; stat ~2 us
        self._unsealed: tuple[tuple, str] | None = None
        super().__init__()  # SealedFileKeyring: keyring's backend init (KEYRING_PROPERTY_* overrides)

    # paths may arrive as strings from keyring's property mechanism
    @property
    def file_path(self) -> Path:
        return self._file_path

    @file_path.setter
    def file_path(self, value: str | Path) -> None:
        self._file_path = Path(value).expanduser()

    @property
    def secret_path(self) -> Path:
        return self._secret_path or self._file_path.with_name(self._file_path.name + ".secret")

    @secret_path.setter
    def secret_path(self, value: str | Path | None) -> None:
        self._secret_path = Path(value).expanduser() if value else None

    def __str__(self) -> str:
        return f"SealedFileKeyring({self.file_path})"

    # -- storage --
    def _box(self, create: bool) -> nacl.secret.SecretBox:
        path = self.secret_path
        if not path.exists():
            if not create:
                raise KeyStoreError(
                    f"the sealing secret {path} for {self.file_path} is missing; restore it "
                    "(or the systemd credential) from your backup"
                )
            _write_private(path, nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE).hex().encode() + b"\n")
        raw = _read_private(path, "sealing secret").strip()
        try:
            secret = bytes.fromhex(raw.decode("ascii")) if len(raw) == 64 else raw
        except (UnicodeDecodeError, ValueError):
            secret = raw
        if len(secret) != nacl.secret.SecretBox.KEY_SIZE:
            raise KeyStoreError(f"sealing secret {path} must hold 32 bytes (64 hex characters)")
        return nacl.secret.SecretBox(secret)

    def _load(self) -> dict[str, dict[str, str]]:
        if not self.file_path.exists():
            return {}
        try:
            doc = json.loads(_read_private(self.file_path, "key file"))
        except json.JSONDecodeError as exc:
            raise KeyStoreError(f"key file {self.file_path} is not valid JSON") from exc
        if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("entries"), dict):
            raise KeyStoreError(f"key file {self.file_path} has an unknown format")
        return doc["entries"]

    def _save(self, entries: dict[str, dict[str, str]]) -> None:
        self._unsealed = None
        body = json.dumps({"version": 1, "entries": entries}, indent=1, sort_keys=True).encode()
        _write_private(self.file_path, body + b"\n")

    # -- keyring API --
    def _stat_key(self, service: str, username: str) -> tuple | None:
        """Both files' identity (mode, inode, size, mtime) and the entry's name; None if one is missing."""
        try:
            a, b = self.file_path.stat(), self.secret_path.stat()
        except OSError:
            return None
        return (a.st_mode, a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns,
                b.st_mode, b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns, service, username)

    def get_password(self, service: str, username: str) -> str | None:
        key = self._stat_key(service, username)
        cached = self._unsealed
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]  # same files, same modes as when it was unsealed (and checked) last
        password = self._unseal(service, username)
        if key is not None and password is not None:
            self._unsealed = (key, password)
        return password

    def _unseal(self, service: str, username: str) -> str | None:
        sealed = self._load().get(service, {}).get(username)
        if sealed is None:
            return None
        try:
            plain = self._box(create=False).decrypt(base64.b64decode(sealed))
            stored_service, stored_user, password = json.loads(plain)
        except (nacl.exceptions.CryptoError, ValueError) as exc:
            raise KeyStoreError(
                f"entry {username!r} in {self.file_path} cannot be unsealed with {self.secret_path}"
            ) from exc
        if (stored_service, stored_user) != (service, username):
            raise KeyStoreError(f"entry {username!r} in {self.file_path} was moved from another entry")
        return password

    def set_password(self, service: str, username: str, password: str) -> None:
        entries = self._load()
        box = self._box(create=not entries and not self.file_path.exists())
        sealed = box.encrypt(json.dumps([service, username, password]).encode())
        entries.setdefault(service, {})[username] = base64.b64encode(bytes(sealed)).decode("ascii")
        self._save(entries)

    def delete_password(self, service: str, username: str) -> None:
        """Remove an entry; KeyError if there is none (SealedFileKeyring: PasswordDeleteError)."""
        entries = self._load()
        if username not in entries.get(service, {}):
            raise self._missing(f"no entry {username!r}")
        del entries[service][username]
        if not entries[service]:
            del entries[service]
        self._save(entries)

    _missing = KeyError


def _make_keyring_backend() -> type:
    import keyring.backend
    import keyring.errors

    class SealedFileKeyring(SealedFile, keyring.backend.KeyringBackend):
        """SealedFile as a keyring backend (PYTHON_KEYRING_BACKEND=tinypds.services.keys.SealedFileKeyring).

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
        dev = bool(getattr(settings, "dev", False))
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
