"""The request log (one line per request, no secrets), `tinypds config check`, `tinypds status`."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from tinypds.config import load_settings
from tinypds.logging_setup import RequestLog

from .conftest import Client, cli, start_server


async def _app(scope, receive, send):
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _call(app, path, query=b"", headers=()):
    scope = {"type": "http", "method": "POST", "path": path, "query_string": query, "headers": list(headers)}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_request_log_line_has_method_path_status_latency_and_no_secrets(caplog):
    caplog.set_level(logging.INFO, logger="tinypds.request")
    sent = _call(RequestLog(_app), "/xrpc/com.atproto.server.refreshSession", b"token=SECRET1",
                 [(b"authorization", b"Bearer SECRET2")])
    assert sent[0]["status"] == 201
    [record] = [r for r in caplog.records if r.name == "tinypds.request"]
    line = record.getMessage()
    assert line.startswith("method=POST path=/xrpc/com.atproto.server.refreshSession status=201 ms=")
    float(line.split("ms=")[1])
    assert "SECRET" not in caplog.text


def test_request_log_records_a_crash_as_500_and_odd_paths_as_one_token(caplog):
    caplog.set_level(logging.INFO, logger="tinypds.request")
    with pytest.raises(RuntimeError):
        _call(RequestLog(_app), "/boom")
    _call(RequestLog(_app), '/a b"\n' + "x" * 500)
    lines = [r.getMessage() for r in caplog.records if r.name == "tinypds.request"]
    assert "status=500" in lines[0]
    path = lines[1].split("path=")[1].split(" status=")[0]
    assert " " not in path and '"' not in path and "\n" not in path and len(path) < 220


def test_request_log_is_silent_above_info(caplog):
    caplog.set_level(logging.WARNING, logger="tinypds.request")
    _call(RequestLog(_app), "/x")
    assert not [r for r in caplog.records if r.name == "tinypds.request"]


def test_server_logs_requests_at_info(tmp_path):
    server = start_server(tmp_path / "data", extra_env={"TINYPDS_LOG_LEVEL": "info"})
    try:
        httpx.get(server.url + "/xrpc/_health?secret=hunter2", timeout=10)
        httpx.get(server.url + "/no/such/page", timeout=10)
    finally:
        assert server.stop() == 0
    err = server.stderr()
    assert "method=GET path=/xrpc/_health status=200" in err
    assert "method=GET path=/no/such/page status=404" in err  # router 404s too
    assert "hunter2" not in err


def test_config_check_prints_settings_masked_and_problems(tmp_path):
    out = cli(tmp_path / "data", "config", "check",
              env={"TINYPDS_RELAYS": "https://user:pa55word@relay.example", "TINYPDS_HOSTNAME": "localhost:2583",
                   "TINYPDS_DEV": "0"})
    assert out.returncode == 0, out.stderr
    assert "TINYPDS_RELAYS=https://user:***@relay.example" in out.stdout
    assert "pa55word" not in out.stdout
    assert "TINYPDS_HOSTNAME=localhost:2583" in out.stdout
    assert "warning: TINYPDS_HOSTNAME is a loopback name" in out.stdout

    out = cli(tmp_path / "data", "config", "check", env={"TINYPDS_PORT": "70000"})
    assert out.returncode == 2
    assert "TINYPDS_PORT=70000 is not a TCP port" in out.stderr


def test_credentials_directory_comes_from_systemd(tmp_path):
    s = load_settings(environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert s.credentials_dir == tmp_path
    assert load_settings(environ={}).credentials_dir is None


def test_status_reports_the_account_and_its_repo(tmp_path):
    server = start_server(tmp_path / "data")
    client = Client(server)
    for i in range(3):
        client.post(f"status {i}")
    client.close()
    try:
        out = cli(server.data_dir, "status", "--offline")
    finally:
        server.stop()
    assert out.returncode == 0, out.stdout + out.stderr
    fields = {line.split("  ", 1)[0].strip(): line.split("  ", 1)[1].strip() for line in out.stdout.splitlines()}
    assert fields["server"] == "running"
    assert fields["DID"] == client.did
    assert fields["handle"] == server.handle
    assert fields["records"].startswith("3 in 1 collections")
    assert fields["firehose seq"].split()[0].isdigit() and int(fields["firehose seq"].split()[0]) >= 4
    assert "signing key present" in fields["keyring"]
    assert fields["last commit"].startswith("rev ")

    out = cli(server.data_dir, "status", "--offline")
    assert "not running" in out.stdout


def test_status_without_a_database_says_so(tmp_path):
    out = cli(tmp_path / "nothing", "status")
    assert out.returncode == 1
    assert "none at" in out.stdout


def test_status_identity_checks_without_network_for_a_dev_account(tmp_path):
    server = start_server(tmp_path / "data")
    server.stop()
    out = cli(server.data_dir, "status", "--timeout", "1")
    assert out.returncode == 0, out.stdout
    assert "kept locally only" in out.stdout
    assert "not checked (dev .test handle)" in out.stdout


def test_status_resolution_lines(monkeypatch):
    """The handle / DID document checks, with the resolvers answering from a table."""
    from tinypds.services.identity import resolver as identity
    from tinypds.services.ops import status

    did, handle = "did:plc:abcdefghijklmnopqrstuvwx", "alice.example.com"
    settings = load_settings({"hostname": "pds.example.com"}, environ={})
    docs = {did: {"id": did, "alsoKnownAs": [f"at://{handle}"], "service": [
        {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds.example.com"}]}}
    handles = {handle: did, "bob.example.com": "did:plc:someoneelse23456789abcd"}

    async def resolve_did(self, d, fresh=False):
        if d not in docs:
            raise identity.DidNotFound(f"no {d}")
        return docs[d]

    async def resolve_handle(self, h, fresh=False):
        return handles.get(h)

    monkeypatch.setattr(identity.DidResolver, "resolve", resolve_did)
    monkeypatch.setattr(identity.HandleResolver, "resolve", resolve_handle)

    def lines(d, h):
        return {line.label: line for line in asyncio.run(status._resolution(settings, d, h, "https://plc.example", 1.0))}

    good = lines(did, handle)
    assert good["DID document"].ok and "https://pds.example.com" in good["DID document"].value
    assert good["handle resolves"].ok and good["handle resolves"].value == f"{handle} -> {did}"

    wrong = lines(did, "bob.example.com")
    assert not wrong["handle resolves"].ok and "points at did:plc:someoneelse" in wrong["handle resolves"].value
    assert not wrong["DID doc handle"].ok

    missing = lines("did:plc:zzzzzzzzzzzzzzzzzzzzzzzz", "nobody.example.com")
    assert not missing["DID document"].ok and "does not resolve" in missing["DID document"].value
    assert not missing["handle resolves"].ok and "does not resolve" in missing["handle resolves"].value


def test_serve_on_a_busy_port_says_so_before_making_the_dev_account(tmp_path):
    """The port is bound before the lifespan: a busy port is a one-line error, and the dev
    account (whose password is printed only once) is not created and its password lost."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = cli(tmp_path / "data", "serve", "--host", "127.0.0.1", "--port", str(port), timeout=60)
    assert out.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "--port" in out.stderr
    assert "LOCAL DEV ACCOUNT" not in out.stdout
    assert not (tmp_path / "data" / "tinypds.sqlite").exists()
    assert "Traceback" not in out.stderr
