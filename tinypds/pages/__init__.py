"""The owner's pages (/account) and the OAuth sign-in/consent pages: Litestar handlers + Jinja2 templates.

One layout (templates/layout.html) and one stylesheet for every page; the only script is
static/passkey.js (WebAuthn needs it). `template_config()` goes to Litestar(template_config=...),
ROUTES into the route table. Imports services, never the store; no HTML is built in Python.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import get
from litestar.response import Response

_DIR = Path(__file__).parent
TEMPLATES = _DIR / "templates"
STATIC = _DIR / "static"
_STATIC_TYPES = {"style.css": "text/css; charset=utf-8", "passkey.js": "text/javascript; charset=utf-8"}


def _date(ts: Any) -> str:
    from .account import fmt_date

    return fmt_date(ts)


def template_config() -> Any:
    from litestar.plugins.jinja import JinjaTemplateEngine
    from litestar.template.config import TemplateConfig

    def setup(engine: Any) -> None:
        engine.engine.filters["date"] = _date

    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=setup)


def _static(name: str) -> Response:
    return Response((STATIC / name).read_bytes(), media_type=_STATIC_TYPES[name],
                    headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})


@get("/account/static/style.css", sync_to_thread=False)
def style_css() -> Response:
    return _static("style.css")


@get("/account/static/passkey.js", sync_to_thread=False)
def passkey_js() -> Response:
    return _static("passkey.js")


def routes() -> list:
    from . import account, actions, care, move, move_in, oauth

    return [style_css, passkey_js, *account.ROUTES, *actions.ROUTES, *care.ROUTES, *move.ROUTES, *move_in.ROUTES,
            *oauth.ROUTES]
