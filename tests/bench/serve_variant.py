"""`tinypds serve` with some of uvicorn's settings overridden, for A/B benchmarks (issue 13).

    python tests/bench/serve_variant.py loop=uvloop[,ws_per_message_deflate=false,...] --data DIR serve --port 0

Replaces the named uvicorn.Config arguments (loop, http, ws, ws_per_message_deflate) before
tinypds.http_serve builds its Config; everything else is the shipped CLI. This tree's tinypds
is imported (not whatever the interpreter has installed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ALLOWED = {"loop": str, "http": str, "ws": str, "ws_per_message_deflate": lambda v: v.lower() in ("1", "true", "on")}


def parse(spec: str) -> dict:
    out = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in ALLOWED or not value:
            raise SystemExit(f"bad override {item!r}: use {', '.join(ALLOWED)}=VALUE")
        out[key] = ALLOWED[key](value)
    return out


OVERRIDES = parse(sys.argv.pop(1))

import uvicorn  # noqa: E402

_Config = uvicorn.Config


class Config(_Config):
    def __init__(self, *args, **kwargs):
        kwargs.update(OVERRIDES)
        super().__init__(*args, **kwargs)


uvicorn.Config = Config

from tinypds.cli import main  # noqa: E402

sys.exit(main())
