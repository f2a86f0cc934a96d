"""The sealed key file: private-key entries in a 0600 JSON file, each value sealed with SecretBox.

Owns the file format and its safety rules: a 32-byte sealing secret from a 0600 file beside
it or a systemd credential, atomic 0600 writes, refusal of files other users can read, and
the key store's error types. Must not import keyring (identity.keys wraps this store as a
keyring backend when one is asked for). Tricky bit: the sealing secret is created only
together with a new, empty store, so entries are never orphaned.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path


import nacl.exceptions
import nacl.secret
import nacl.utils

DEFAULT_KEY_FILE = "~/.config/tinypds/keys.json"


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
