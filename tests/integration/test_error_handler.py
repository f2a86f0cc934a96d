"""The one app-level exception handler, in-process: every failure becomes XRPC JSON and
a 500 carries no detail (the detail goes to the log)."""

from __future__ import annotations

import logging

from tests.inprocess import serve
from tinypds.app import xrpc_exception_handler
from tinypds.errors import BlobTooLarge, ExpiredToken, RecordNotFound
from litestar import Litestar, Request, get, post


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


@post("/small", status_code=200, request_max_body_size=10)
async def small(request: Request) -> dict:
    return {"n": len(b"".join([c async for c in request.stream()]))}


@get("/teapot")
async def teapot() -> None:
    raise ValueError("short and stout")


def make_client():
    return serve(Litestar([boom, record, expired, too_large, small, teapot],
                          exception_handlers={Exception: xrpc_exception_handler}, logging_config=None))


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
        assert c.post("/small", content=b"0123456789").json() == {"n": 10}
        r = c.post("/small", content=b"0123456789a")
        assert (r.status_code, r.json()["error"]) == (413, "PayloadTooLarge")
        r = c.get("/nowhere")
        assert (r.status_code, r.json()) == (404, {"error": "NotFound", "message": "Not Found"})
        r = c.post("/boom")
        assert (r.status_code, r.json()["error"]) == (405, "MethodNotAllowed")
        r = c.get("/teapot")  # any other exception: a generic 500, never a traceback
        assert (r.status_code, r.json()) == (500, {"error": "InternalServerError", "message": "Internal Server Error"})
