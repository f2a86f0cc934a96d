"""The one app-level exception handler, in-process: every failure becomes XRPC JSON and
a 500 carries no detail (the detail goes to the log)."""

from __future__ import annotations

import logging

from litestar import Litestar, get
from litestar.exceptions import HTTPException, ValidationException
from litestar.testing import TestClient

from tinypds.app import xrpc_exception_handler
from tinypds.errors import BlobTooLarge, ExpiredToken, RecordNotFound


@get("/boom")
async def boom() -> None:
    raise RuntimeError("secret detail /etc/passwd")


@get("/record")
async def record() -> None:
    raise RecordNotFound("Could not locate record: at://did:plc:x/a.b.c/k")


@get("/expired")
async def expired() -> None:
    raise ExpiredToken("Token has expired")


@get("/too-large")
async def too_large() -> None:
    raise BlobTooLarge()


@get("/validation")
async def validation() -> None:
    raise ValidationException("bad param")


@get("/teapot")
async def teapot() -> None:
    raise HTTPException(status_code=418, detail="short and stout")


def make_client() -> TestClient:
    app = Litestar([boom, record, expired, too_large, validation, teapot], exception_handlers={Exception: xrpc_exception_handler}, logging_config=None)
    return TestClient(app)


def test_500_has_no_detail_and_is_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="tinypds.app"), make_client() as c:
        resp = c.get("/boom")
    assert resp.status_code == 500
    assert resp.json() == {"error": "InternalServerError", "message": "Internal Server Error"}
    assert "secret detail" not in resp.text
    logged = [r for r in caplog.records if r.name == "tinypds.app" and r.exc_info]
    assert logged and "secret detail" in str(logged[0].exc_info[1])


def test_xrpc_errors_keep_name_message_and_status():
    with make_client() as c:
        r = c.get("/record")
        assert (r.status_code, r.json()) == (400, {"error": "RecordNotFound", "message": "Could not locate record: at://did:plc:x/a.b.c/k"})
        r = c.get("/expired")
        assert (r.status_code, r.json()["error"]) == (400, "ExpiredToken")
        r = c.get("/too-large")
        assert (r.status_code, r.json()["error"]) == (400, "BlobTooLarge")


def test_framework_errors_are_mapped():
    with make_client() as c:
        r = c.get("/validation")
        assert (r.status_code, r.json()["error"]) == (400, "InvalidRequest")
        r = c.get("/nowhere")
        assert (r.status_code, r.json()) == (404, {"error": "NotFound", "message": "Not Found"})
        r = c.post("/boom")
        assert (r.status_code, r.json()["error"]) == (405, "MethodNotAllowed")
        r = c.get("/teapot")  # an unmapped status: a generic 500, never the framework's shape
        assert (r.status_code, r.json()) == (500, {"error": "InternalServerError", "message": "Internal Server Error"})
