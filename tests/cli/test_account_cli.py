"""The owner's CLI without SMTP and without private keys where none are needed, run as an
operator would (subprocesses, no TINYPDS_KEY_FILE, no TINYPDS_DEV): a loopback hostname is a
dev setup, so every command finds the keys in DATA/keys.json, where `serve` keeps them.
`account email|email-token|password`, `verify` from the DID document's public key (also with
the key file gone, as after restoring a backup without keys), `status` on a dev identity."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYPDS_") and k != "PYTHON_KEYRING_BACKEND"}
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"  # a headless machine: no system keyring
    return env


def cli(data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinypds.cli", "--data", str(data), *args], cwd=REPO_ROOT,
                          env=_env(), input=stdin, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("acct") / "data"
    out = cli(d, "init", "--dev", "--handle", "alice.test", "--hostname", "localhost:2611",
              "--email", "alice@example.com", "--password-stdin", stdin="pw one\n")
    assert out.returncode == 0, out.stdout + out.stderr
    # like the account `tinypds serve` makes on first start: no settings file says "dev"
    (d / "tinypds.toml").unlink()
    assert (d / "keys.json").exists(), "a loopback setup keeps its keys beside the data"
    return d


def test_email_show_set_and_token(data):
    out = cli(data, "account", "email")
    assert out.returncode == 0 and "alice@example.com (not confirmed)" in out.stdout, out.stdout + out.stderr
    out = cli(data, "account", "email-token", "confirm-email")
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"[A-Z2-7]{5}-[A-Z2-7]{5}", out.stdout.strip())
    assert "15 minutes" in out.stderr
    db = (data / "tinypds.sqlite").read_bytes()
    assert out.stdout.strip().encode() not in db, "the token must not be stored in plaintext"
    assert cli(data, "account", "email", "not-an-email").returncode == 1
    out = cli(data, "account", "email", "alice2@example.com")
    assert out.returncode == 0
    assert "alice2@example.com (not confirmed)" in cli(data, "account", "email").stdout


def test_offline_password(data):
    out = cli(data, "account", "password", "--password-stdin", stdin="pw two\n")
    assert out.returncode == 0, out.stderr
    assert re.search(r"password of did:\S+ changed; 0 session\(s\) ended", out.stdout)


def test_status_knows_a_dev_identity_and_finds_the_keys(data):
    out = cli(data, "status", "--timeout", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "signing key present" in out.stdout, out.stdout
    assert "MISSING" not in out.stdout
    assert "not checked (dev .test handle)" in out.stdout


def test_verify_uses_the_did_documents_public_key_and_no_private_key(data, tmp_path):
    out = cli(data, "verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "from the DID document (verified local PLC log)" in out.stdout
    # as after restoring a backup without its keys: the key file is gone
    (data / "keys.json").rename(tmp_path / "keys.json.away")
    try:
        out = cli(data, "verify")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "OK" in out.stdout and "signature checked with did:key:" in out.stdout
    finally:
        (tmp_path / "keys.json.away").rename(data / "keys.json")


def test_the_readme_dev_account_from_serve(tmp_path):
    """`tinypds serve` exactly as the README starts it (no settings at all, a headless
    machine): afterwards `status` finds its keys and knows its dev identity, `verify` passes."""
    import time

    data = tmp_path / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tinypds.cli", "--data", str(data), "serve", "--port", str(port)],
                            cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if not line or line.startswith("tinypds listening on"):
                break
        assert any("LOCAL DEV ACCOUNT" in x for x in lines), "".join(lines)
    finally:
        proc.terminate()
        proc.wait(30)
    out = cli(data, "status", "--timeout", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "signing key present" in out.stdout and "MISSING" not in out.stdout, out.stdout
    assert "kept locally only" in out.stdout and "not checked (dev .test handle)" in out.stdout, out.stdout
    out = cli(data, "verify")
    assert out.returncode == 0 and out.stdout.rstrip().endswith("OK"), out.stdout + out.stderr


def test_a_backup_restored_without_keys_verifies(data, tmp_path):
    out = cli(data, "backup", str(tmp_path / "copy.sqlite"))
    assert out.returncode == 0, out.stderr
    restored = tmp_path / "restored"
    out = cli(restored, "restore", str(tmp_path / "copy.sqlite"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (restored / "keys.json").exists() or "signing" not in (restored / "keys.json").read_text()
    out = cli(restored, "verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "from the DID document (verified local PLC log)" in out.stdout and out.stdout.rstrip().endswith("OK")
