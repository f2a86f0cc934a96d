"""KeyStore over the sealed-file keyring; backend selection; sealed export/import; passwords."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path

import keyring
import keyring.backends.fail
import nacl.pwhash
import pytest

from tinypds.core.crypto import K256PrivateKey, P256PrivateKey
from tinypds.services.identity.keys import (CREDENTIAL_NAME, KeyMissingError, KeyStore, KeyStoreError, SealedFileKeyring)
from tinypds.services.auth.passwords import hash_password, verify_password

DID = "did:plc:abcdefghijklmnopqrstuvwx"
DID2 = "did:plc:zyxwvutsrqponmlkjihgfedc"
FAST = {"opslimit": nacl.pwhash.argon2id.OPSLIMIT_MIN, "memlimit": nacl.pwhash.argon2id.MEMLIMIT_MIN}


@dataclass
class FakeSettings:
    keyring_backend: str = "file"
    key_file: Path | None = None


@pytest.fixture()
def store(tmp_path):
    return KeyStore(SealedFileKeyring(tmp_path / "cfg" / "keys.json"))


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_round_trip_and_purposes(store):
    signing, rotation = K256PrivateKey.generate(), K256PrivateKey.generate()
    store.put_key(DID, "signing", signing)
    store.put_key(DID, "rotation", rotation)
    assert store.get_key(DID, "signing").to_bytes() == signing.to_bytes()
    assert store.get_key(DID, "rotation").to_bytes() == rotation.to_bytes()
    assert store.has_key(DID, "signing") and not store.has_key(DID2, "signing")
    p = P256PrivateKey.generate()
    store.put_key(DID2, "signing", p)
    got = store.get_key(DID2, "signing")
    assert isinstance(got, P256PrivateKey) and got.public_key() == p.public_key()
    with pytest.raises(ValueError):
        store.put_key(DID, "other", signing)


def test_missing_key_names_the_fix(store):
    with pytest.raises(KeyMissingError) as exc:
        store.get_key(DID, "signing")
    msg = str(exc.value)
    assert DID in msg and "tinypds key import" in msg and "TINYPDS_KEY_FILE" in msg
    assert not store.has_key(DID, "signing")  # and nothing was generated


def test_delete(store):
    store.put_key(DID, "signing", K256PrivateKey.generate())
    assert store.delete_key(DID, "signing") is True
    assert store.delete_key(DID, "signing") is False
    with pytest.raises(KeyMissingError):
        store.get_key(DID, "signing")


def test_files_are_private_and_values_sealed(tmp_path):
    path = tmp_path / "cfg" / "keys.json"
    backend = SealedFileKeyring(path)
    store = KeyStore(backend)
    key = K256PrivateKey.generate()
    store.put_key(DID, "signing", key)
    assert _mode(path) == 0o600
    assert _mode(backend.secret_path) == 0o600
    assert _mode(path.parent) == 0o700
    text = path.read_text()
    assert key.to_bytes().hex() not in text
    assert f"{DID}:signing" in json.loads(text)["entries"]["tinypds"]
    assert "SealedFileKeyring" in store.backend_name() and str(path) in store.backend_name()
    # a second instance on the same files reads the key back
    assert KeyStore(SealedFileKeyring(path)).get_key(DID, "signing").to_bytes() == key.to_bytes()


def test_world_readable_files_refused(tmp_path):
    path = tmp_path / "keys.json"
    store = KeyStore(SealedFileKeyring(path))
    store.put_key(DID, "signing", K256PrivateKey.generate())
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        store.get_key(DID, "signing")


def test_missing_secret_is_an_error_not_a_new_secret(tmp_path):
    path = tmp_path / "keys.json"
    backend = SealedFileKeyring(path)
    KeyStore(backend).put_key(DID, "signing", K256PrivateKey.generate())
    backend.secret_path.unlink()
    with pytest.raises(KeyStoreError, match="sealing secret"):
        KeyStore(SealedFileKeyring(path)).get_key(DID, "signing")
    with pytest.raises(KeyStoreError):
        KeyStore(SealedFileKeyring(path)).put_key(DID, "rotation", K256PrivateKey.generate())
    assert not backend.secret_path.exists()


def test_wrong_secret_and_swapped_entries_refused(tmp_path):
    path = tmp_path / "keys.json"
    store = KeyStore(SealedFileKeyring(path))
    store.put_key(DID, "signing", K256PrivateKey.generate())
    store.put_key(DID, "rotation", K256PrivateKey.generate())
    doc = json.loads(path.read_text())
    entries = doc["entries"]["tinypds"]
    entries[f"{DID}:signing"], entries[f"{DID}:rotation"] = entries[f"{DID}:rotation"], entries[f"{DID}:signing"]
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyStoreError, match="moved"):
        store.get_key(DID, "signing")
    other_secret = tmp_path / "other.secret"
    other_secret.write_text("00" * 32)
    other_secret.chmod(0o600)
    with pytest.raises(KeyStoreError, match="cannot be unsealed"):
        KeyStore(SealedFileKeyring(path, other_secret)).get_key(DID, "rotation")


def test_open_file_backend_and_systemd_credential(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / CREDENTIAL_NAME).write_text("ab" * 32 + "\n")
    (creds / CREDENTIAL_NAME).chmod(0o400)
    settings = FakeSettings("file", tmp_path / "state" / "keys.json")
    store = KeyStore.open(settings, credentials_dir=creds)
    store.put_key(DID, "rotation", K256PrivateKey.generate())
    assert (tmp_path / "state" / "keys.json").exists()
    assert not (tmp_path / "state" / "keys.json.secret").exists()  # the credential sealed it
    assert KeyStore.open(settings, credentials_dir=creds).has_key(DID, "rotation")
    with pytest.raises(KeyStoreError):  # without the credential, the default secret is absent
        KeyStore.open(settings).get_key(DID, "rotation")


@pytest.fixture()
def headless_keyring():
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


def test_open_auto_falls_back_to_sealed_file_when_headless(tmp_path, headless_keyring):
    store = KeyStore.open(FakeSettings("auto", tmp_path / "keys.json"))
    assert "SealedFileKeyring" in store.backend_name()
    with pytest.raises(KeyStoreError, match="TINYPDS_KEYRING_BACKEND=file"):
        KeyStore.open(FakeSettings("system", tmp_path / "keys.json"))
    with pytest.raises(KeyStoreError):
        KeyStore.open(FakeSettings("bogus"))


def test_open_auto_uses_a_configured_keyring(tmp_path):
    previous = keyring.get_keyring()
    configured = SealedFileKeyring(tmp_path / "configured.json")
    keyring.set_keyring(configured)
    try:
        # a usable configured backend wins over the sealed-file fallback
        store = KeyStore.open(FakeSettings("auto", tmp_path / "fallback.json"))
        store.put_key(DID, "signing", K256PrivateKey.generate())
        assert (tmp_path / "configured.json").exists() and not (tmp_path / "fallback.json").exists()
    finally:
        keyring.set_keyring(previous)


def test_keyring_property_mechanism(tmp_path, monkeypatch):
    # keyring's own KEYRING_PROPERTY_* env vars can place the file (as when selected by
    # PYTHON_KEYRING_BACKEND=tinypds.services.identity.keys.SealedFileKeyring)
    monkeypatch.setenv("KEYRING_PROPERTY_FILE_PATH", str(tmp_path / "via-env.json"))
    backend = keyring.core.load_keyring("tinypds.services.identity.keys.SealedFileKeyring")
    assert isinstance(backend, SealedFileKeyring)
    assert backend.file_path == tmp_path / "via-env.json"
    assert backend.secret_path == tmp_path / "via-env.json.secret"


def test_sealed_export_import_round_trip(tmp_path, store):
    keys = {(d, p): K256PrivateKey.generate() for d in (DID, DID2) for p in ("signing", "rotation")}
    for (d, p), k in keys.items():
        store.put_key(d, p, k)
    blob = store.export_sealed([DID, DID2], "correct horse", **FAST)
    assert blob.startswith(b"TPDSKEYS")
    for k in keys.values():
        assert k.to_bytes().hex().encode() not in blob and k.to_bytes() not in blob
    other = KeyStore(SealedFileKeyring(tmp_path / "elsewhere" / "keys.json"))
    pairs = other.import_sealed(blob, "correct horse")
    assert sorted(pairs) == sorted(keys)
    for (d, p), k in keys.items():
        assert other.get_key(d, p).to_bytes() == k.to_bytes()
    # importing the same keys again is harmless
    assert len(other.import_sealed(blob, "correct horse")) == 4


def test_sealed_import_wrong_passphrase_and_damage(store, tmp_path):
    store.put_key(DID, "signing", K256PrivateKey.generate())
    blob = store.export_sealed([DID], "right", **FAST)
    other = KeyStore(SealedFileKeyring(tmp_path / "o.json"))
    with pytest.raises(ValueError, match="wrong passphrase"):
        other.import_sealed(blob, "wrong")
    with pytest.raises(ValueError):
        other.import_sealed(blob[:-1] + bytes([blob[-1] ^ 1]), "right")
    with pytest.raises(ValueError):
        other.import_sealed(b"NOTKEYS!" + blob[8:], "right")
    assert not other.has_key(DID, "signing")


def test_sealed_import_refuses_to_clobber(store, tmp_path):
    store.put_key(DID, "signing", K256PrivateKey.generate())
    blob = store.export_sealed([DID], "pw", **FAST)
    other = KeyStore(SealedFileKeyring(tmp_path / "o.json"))
    mine = K256PrivateKey.generate()
    other.put_key(DID, "signing", mine)
    with pytest.raises(KeyStoreError, match="overwrite"):
        other.import_sealed(blob, "pw")
    assert other.get_key(DID, "signing").to_bytes() == mine.to_bytes()
    other.import_sealed(blob, "pw", overwrite=True)
    assert other.get_key(DID, "signing").to_bytes() == store.get_key(DID, "signing").to_bytes()


def test_export_nothing_is_an_error(store):
    with pytest.raises(KeyMissingError):
        store.export_sealed([DID], "pw", **FAST)


def test_password_hashing():
    h = hash_password("hunter2 ünïcode")
    assert h.startswith("$argon2id$")
    assert verify_password("hunter2 ünïcode", h)
    assert not verify_password("hunter3", h)
    assert hash_password("hunter2 ünïcode") != h  # salted
    for bad in ["", "not-a-hash", "$argon2id$garbage", "$2b$12$bcryptish"]:
        assert not verify_password("hunter2", bad)
    assert not verify_password(None, h)  # type: ignore[arg-type]


def test_a_key_replaced_by_another_process_is_seen_at_once(tmp_path):
    """get_key reuses the last unsealed entry only while both files are unchanged."""
    path = tmp_path / "keys.json"
    server = KeyStore(SealedFileKeyring(path))
    first = K256PrivateKey.generate()
    server.put_key(DID, "signing", first)
    assert server.get_key(DID, "signing").to_bytes() == first.to_bytes()
    assert server.get_key(DID, "signing") is server.get_key(DID, "signing")  # the cached parse
    second = K256PrivateKey.generate()
    KeyStore(SealedFileKeyring(path)).put_key(DID, "signing", second)  # e.g. `tinypds key import`
    assert server.get_key(DID, "signing").to_bytes() == second.to_bytes()
    path.chmod(0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        server.get_key(DID, "signing")
    path.chmod(0o600)
    KeyStore(SealedFileKeyring(path)).delete_key(DID, "signing")
    with pytest.raises(KeyMissingError):
        server.get_key(DID, "signing")
