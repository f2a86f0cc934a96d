"""`tinypds import FILE.car` without --did-key: the signing key comes from the DID document.

A loopback stand-in answers both as a PLC directory (GET /<did:plc>) and as a did:web host
(GET /.well-known/did.json); offline (a closed port) the import says the signature could NOT
be checked and how to check it.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tinypds.cli import main
from tinypds.store.db import Database

from tests.services.repo_helpers import build_repo_blocks, car_bytes, fixed_key

KEY = fixed_key("resolved-signer")
OTHER = fixed_key("someone-else")
PLC_DID = "did:plc:resolvemeresolvemeresol"


def did_doc(did: str, key, with_key: bool = True) -> dict:
    doc = {"@context": ["https://www.w3.org/ns/did/v1"], "id": did, "alsoKnownAs": ["at://alice.test"],
           "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds.example"}]}
    if with_key:
        doc["verificationMethod"] = [{"id": f"{did}#atproto", "type": "Multikey", "controller": did,
                                      "publicKeyMultibase": key.public_key().did_key()[len("did:key:"):]}]
    return doc


class StandIn:
    """docs: path -> JSON document served with 200; anything else 404."""

    def __init__(self):
        self.docs: dict[str, dict] = {}
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.hits.append(self.path)
                doc = outer.docs.get(self.path)
                body = json.dumps(doc if doc is not None else {"message": "not found"}).encode()
                self.send_response(200 if doc is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def standin():
    s = StandIn()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def headless_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYPDS_KEYRING_BACKEND", "file")
    monkeypatch.setenv("TINYPDS_KEY_FILE", str(tmp_path / "keys" / "keys.json"))
    monkeypatch.delenv("TINYPDS_DATA_DIR", raising=False)
    monkeypatch.delenv("TINYPDS_CONFIG", raising=False)


def write_car(tmp_path, did: str, key=KEY, name: str = "in.car"):
    root, blocks = build_repo_blocks(30, key, did=did)
    path = tmp_path / name
    path.write_bytes(car_bytes([root], blocks))
    return path


def account_rows(data) -> int:
    if not (data / "tinypds.sqlite").exists():
        return 0
    with Database.open(data / "tinypds.sqlite") as db:
        return db.read(lambda c: c.execute("SELECT count(*) FROM account").fetchone()[0])


def test_did_plc_key_from_the_plc_directory(tmp_path, standin, monkeypatch, capsys):
    standin.docs[f"/{PLC_DID}"] = did_doc(PLC_DID, KEY)
    monkeypatch.setenv("TINYPDS_PLC_URL", standin.url)
    path = write_car(tmp_path, PLC_DID)
    assert main(["--data", str(tmp_path / "data"), "import", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"signature valid (signed by {KEY.public_key().did_key()})" in out
    assert f"signature checked with the signing key in {PLC_DID}'s DID document" in out
    assert "could NOT be checked" not in err
    assert f"/{PLC_DID}" in standin.hits


def test_did_web_key_from_the_host(tmp_path, standin, capsys):
    did = f"did:web:127.0.0.1%3A{standin.port}"
    standin.docs["/.well-known/did.json"] = did_doc(did, KEY)
    path = write_car(tmp_path, did)
    assert main(["--data", str(tmp_path / "data"), "import", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"signature valid (signed by {KEY.public_key().did_key()})" in out


def test_a_car_not_signed_by_the_documents_key_is_refused(tmp_path, standin, monkeypatch, capsys):
    standin.docs[f"/{PLC_DID}"] = did_doc(PLC_DID, OTHER)  # the document names another key
    monkeypatch.setenv("TINYPDS_PLC_URL", standin.url)
    path = write_car(tmp_path, PLC_DID)
    data = tmp_path / "data"
    assert main(["--data", str(data), "import", str(path)]) == 1
    err = capsys.readouterr().err
    assert "import failed, nothing was changed" in err and "signature" in err
    assert f"{PLC_DID}'s DID document" in err and "--did-key" in err
    assert account_rows(data) == 0
    # the right key given explicitly still imports it
    assert main(["--data", str(data), "import", str(path), "--did-key", KEY.public_key().did_key()]) == 0


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_says_the_signature_could_not_be_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TINYPDS_PLC_URL", f"http://127.0.0.1:{closed_port()}")
    path = write_car(tmp_path, PLC_DID)
    assert main(["--data", str(tmp_path / "data"), "import", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "signature NOT CHECKED" in out
    assert "could NOT be checked" in err and f"resolving {PLC_DID} failed" in err
    assert "--did-key" in err


def test_a_document_without_a_signing_key_is_not_a_check(tmp_path, standin, monkeypatch, capsys):
    standin.docs[f"/{PLC_DID}"] = did_doc(PLC_DID, KEY, with_key=False)
    monkeypatch.setenv("TINYPDS_PLC_URL", standin.url)
    path = write_car(tmp_path, PLC_DID)
    assert main(["--data", str(tmp_path / "data"), "import", str(path)]) == 0
    err = capsys.readouterr().err
    assert "could NOT be checked" in err and "no usable #atproto signing key" in err
