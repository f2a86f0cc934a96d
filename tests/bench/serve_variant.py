"""`tinypds serve` with uvicorn's event loop overridden, for the uvloop A/B of issue 13 only.

    python tests/bench/serve_loop.py uvloop|asyncio --data DIR serve --port 0

Replaces uvicorn.Config's `loop` argument before tinypds.http_serve builds it; everything else
is the shipped CLI. This tree's tinypds is imported (not whatever the interpreter has installed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

LOOP = sys.argv.pop(1)
if LOOP not in ("uvloop", "asyncio"):
    raise SystemExit(f"loop must be uvloop or asyncio, not {LOOP!r}")

import uvicorn  # noqa: E402

_Config = uvicorn.Config


class Config(_Config):
    def __init__(self, *args, **kwargs):
        kwargs["loop"] = LOOP
        super().__init__(*args, **kwargs)


uvicorn.Config = Config

from tinypds.cli import main  # noqa: E402

sys.exit(main())
