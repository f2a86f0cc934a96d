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


class LazyJinja:
    """Litestar's Jinja engine, made on the first page rendered: an idle server never imports
    jinja2 (the XRPC API needs no templates). Follows litestar's TemplateEngineProtocol."""

    def __init__(self, directory: Any = None, engine_instance: Any = None) -> None:
        self._directory = directory
        self._engine: Any = None
        self._callables: list[tuple[str, Any]] = []

    def _real(self) -> Any:
        if self._engine is None:
            from litestar.plugins.jinja import JinjaTemplateEngine

            engine = JinjaTemplateEngine(directory=self._directory)
            engine.engine.filters["date"] = _date
            for key, fn in self._callables:
                engine.register_template_callable(key, fn)
            self._engine = engine
        return self._engine

    def get_template(self, template_name: str) -> Any:
        return self._real().get_template(template_name)

    def render_string(self, template_string: str, context: Any) -> str:
        return self._real().render_string(template_string, context)

    def register_template_callable(self, key: str, template_callable: Any) -> None:
        if self._engine is not None:
            self._engine.register_template_callable(key, template_callable)
        else:
            self._callables.append((key, template_callable))


def template_config() -> Any:
    from litestar.template.config import TemplateConfig

    return TemplateConfig(directory=TEMPLATES, engine=LazyJinja)


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
