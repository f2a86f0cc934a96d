"""`tinypds import / export / verify` end to end on temp data directories (in-process CLI)."""

from __future__ import annotations

import pytest

from tinypds.cli import main
from tinypds.core import car as car_core

from tests.services.repo_helpers import build_repo_blocks, car_bytes, fixed_key, open_env

KEY = fixed_key("cli-signer")
DID_KEY = KEY.public_key().did_key()


@pytest.fixture
def car_file(tmp_path):
    root, blocks = build_repo_blocks(200, KEY)
    path = tmp_path / "in.car"
    path.write_bytes(car_bytes([root], blocks))
    return root, blocks, path


@pytest.fixture(autouse=True)
def headless_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYPDS_KEYRING_BACKEND", "file")
    monkeypatch.setenv("TINYPDS_KEY_FILE", str(tmp_path / "keys" / "keys.json"))
    monkeypatch.delenv("TINYPDS_DATA_DIR", raising=False)
    monkeypatch.delenv("TINYPDS_CONFIG", raising=False)


def test_import_export_verify_round_trip(tmp_path, car_file, capsys):
    root, blocks, path = car_file
    data = tmp_path / "data"
    assert main(["--data", str(data), "import", str(path), "--did-key", DID_KEY]) == 0
    out = capsys.readouterr().out
    assert str(root) in out and "records   200" in out and "offline copy" in out
    assert main(["--data", str(data), "verify", "--did-key", DID_KEY, "--records"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK")
    exported = tmp_path / "out.car"
    assert main(["--data", str(data), "export", str(exported)]) == 0
    roots, out_blocks = car_core.read_car_bytes(exported.read_bytes())
    assert roots == [root] and sorted(out_blocks) == sorted(blocks)
    assert main(["--data", str(data), "verify", str(exported), "--did-key", DID_KEY]) == 0
    # refuses to overwrite without --force
    assert main(["--data", str(data), "export", str(exported)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["--data", str(data), "export", str(exported), "--force"]) == 0


def test_import_into_same_account_resigns(tmp_path, car_file, capsys):
    root, blocks, path = car_file
    env = open_env(tmp_path)  # account DID, key in tmp/keys/keys.json
    env.db.close()
    assert main(["--data", str(env.dir), "import", str(path), "--did-key", DID_KEY]) == 0
    out = capsys.readouterr().out
    assert "re-signed" in out
    assert main(["--data", str(env.dir), "verify"]) == 0  # checked with the account key from the key store
    assert "signed by this account" in capsys.readouterr().out


def test_bad_car_gives_one_line_error_and_no_change(tmp_path, car_file, capsys):
    root, blocks, path = car_file
    data = tmp_path / "data"
    bad = tmp_path / "bad.car"
    bad.write_bytes(path.read_bytes()[:-5])
    assert main(["--data", str(data), "import", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tinypds: error: import failed, nothing was changed: corrupt CAR")
    assert main(["--data", str(data), "verify", str(bad)]) == 1
    assert "truncated" in capsys.readouterr().err
    assert main(["--data", str(data), "export", str(tmp_path / "x.car")]) == 1  # nothing imported
    assert "no repo" in capsys.readouterr().err
    assert not (tmp_path / "x.car").exists()


def test_wrong_signature_key_and_missing_files(tmp_path, car_file, capsys):
    root, blocks, path = car_file
    other = fixed_key("other").public_key().did_key()
    assert main(["--data", str(tmp_path / "d"), "verify", str(path), "--did-key", other]) == 1
    assert "signature does not verify" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "d"), "verify", str(path), "--did-key", "did:key:nonsense"]) == 1
    assert "--did-key" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "nowhere"), "verify"]) == 1
    assert "no database" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "d"), "import", str(tmp_path / "missing.car")]) == 1
    assert "is not a file" in capsys.readouterr().err
