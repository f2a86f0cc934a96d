"""The headless key store under systemd: the sealing secret comes from $CREDENTIALS_DIRECTORY.

What the unit sets up (LoadCredential=tinypds-keys:/etc/tinypds/keys.secret) must be what
KeyStore.open uses, through Settings alone: no secret file is written beside the keys, and
the keys cannot be opened without the credential.
"""

from __future__ import annotations

import secrets

import pytest

from tinypds.config import load_settings
from tinypds.core.crypto import K256PrivateKey
from tinypds.services.identity.keys import CREDENTIAL_NAME, KeyStore, KeyStoreError

DID = "did:plc:abcdefghijklmnopqrstuvwx"


def _settings(tmp_path, with_credential: bool):
    env = {"TINYPDS_DATA_DIR": str(tmp_path / "data"), "TINYPDS_KEYRING_BACKEND": "file",
           "TINYPDS_KEY_FILE": str(tmp_path / "data" / "keys.json")}
    if with_credential:
        env["CREDENTIALS_DIRECTORY"] = str(tmp_path / "creds")
    return load_settings(environ=env)


def test_sealing_secret_comes_from_the_systemd_credential(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    secret = creds / CREDENTIAL_NAME
    secret.write_text(secrets.token_hex(32) + "\n")
    secret.chmod(0o400)  # as systemd hands it over

    key = K256PrivateKey.generate()
    KeyStore.open(_settings(tmp_path, True)).put_key(DID, "signing", key)
    assert (tmp_path / "data" / "keys.json").exists()
    assert not list((tmp_path / "data").glob("*.secret")), "a sealing secret was written beside the keys"

    again = KeyStore.open(_settings(tmp_path, True)).get_key(DID, "signing")
    assert again.to_bytes() == key.to_bytes()
    with pytest.raises(KeyStoreError, match="sealing secret"):
        KeyStore.open(_settings(tmp_path, False)).get_key(DID, "signing")
