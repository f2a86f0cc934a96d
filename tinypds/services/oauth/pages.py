"""Server-rendered HTML for the sign-in/consent page and the account ("authorized apps") page.

Pure string building: every value is HTML-escaped here, the pages need no JavaScript, every
form carries the CSRF token, and the caller sends them with PAGE_HEADERS (CSP with
frame-ancestors 'none', X-Frame-Options DENY, no-store). Imports only .scopes.
"""

from __future__ import annotations

import datetime
from html import escape
from urllib.parse import urlsplit

from .scopes import describe

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; base-uri 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1b1d21}
main{max-width:30rem;margin:2rem auto;background:#fff;border-radius:12px;padding:1.5rem 1.75rem;box-shadow:0 1px 4px #0002}
h1{font-size:1.35rem;margin:.25rem 0 1rem}.client{display:flex;gap:.75rem;align-items:center}
.client img{width:48px;height:48px;border-radius:8px}.muted{color:#555;font-size:.9rem;word-break:break-all}
ul{padding-left:1.2rem}li{margin:.25rem 0}label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input[type=password]{width:100%;box-sizing:border-box;padding:.6rem;font-size:1rem;border:1px solid #888;border-radius:6px}
.check{font-weight:400;display:flex;gap:.5rem;align-items:center}
.buttons{display:flex;gap:.75rem;margin-top:1.25rem}button{flex:1;padding:.7rem;font-size:1rem;border-radius:6px;border:1px solid #1d4ed8;cursor:pointer}
button.primary{background:#1d4ed8;color:#fff}button.secondary{background:#fff;color:#1d4ed8}
button:focus-visible,input:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}
.error{background:#fde8e8;border:1px solid #c81e1e;color:#7f1d1d;padding:.5rem .75rem;border-radius:6px}
table{width:100%;border-collapse:collapse}td{padding:.5rem 0;border-top:1px solid #ddd;vertical-align:top}
"""


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>")


def _error(error: str | None) -> str:
    return f'<p class="error" role="alert">{escape(error)}</p>' if error else ""


def authorize_page(*, client_name: str, client_id: str, logo_uri: str | None, scope: str, handle: str | None,
                   did: str, remembered: bool, csrf: str, request_uri: str, error: str | None = None) -> str:
    """The one page: who asks, for what (in words), as whom; password unless remembered; allow/deny."""
    host = urlsplit(client_id).hostname or client_id
    logo = ""
    if logo_uri and urlsplit(logo_uri).scheme == "https":
        logo = f'<img src="{escape(logo_uri)}" alt="" width="48" height="48">'
    perms = "".join(f"<li>{escape(line)}</li>" for line in describe(scope.split()))
    who = f"@{escape(handle)}" if handle else escape(did)
    if remembered:
        credentials = f'<p>Signed in on this device as <strong>{who}</strong>.</p>'
    else:
        credentials = (
            f'<p>Sign in as <strong>{who}</strong> <span class="muted">({escape(did)})</span></p>'
            '<label for="password">Password</label>'
            '<input id="password" name="password" type="password" autocomplete="current-password" autofocus>'
            '<label class="check"><input type="checkbox" name="remember" value="1"> Remember this device</label>'
        )
    body = (
        f'<div class="client">{logo}<div><h1>{escape(client_name)} wants to access your account</h1>'
        f'<div class="muted">{escape(host)} &middot; <span title="client_id">{escape(client_id)}</span></div></div></div>'
        f"{_error(error)}"
        f'<h2 style="font-size:1rem">This app will be able to:</h2><ul>{perms}</ul>'
        f'<form method="post" action="/oauth/authorize">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
        f'<input type="hidden" name="request_uri" value="{escape(request_uri)}">'
        f'<input type="hidden" name="client_id" value="{escape(client_id)}">'
        f"{credentials}"
        # Allow comes first in the DOM (Enter in the password field submits the first button),
        # and is shown on the right
        '<div class="buttons" style="flex-direction:row-reverse"><button class="primary" type="submit" name="action" value="allow">Allow</button>'
        '<button class="secondary" type="submit" name="action" value="deny">Deny</button></div></form>'
    )
    return _page(f"Sign in to {client_name}", body)


def error_page(message: str) -> str:
    return _page("Sign-in problem", f"<h1>Sign-in problem</h1>{_error(message)}<p>Return to the app and start again.</p>")


def _date(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d")


def account_page(*, handle: str | None, did: str | None, apps: list[dict] | None, csrf: str, error: str | None = None) -> str:
    """Signed out: a password form. Signed in: the authorized apps, each with a Revoke button."""
    if apps is None:
        body = (
            f"<h1>Your account</h1>{_error(error)}"
            f'<form method="post" action="/account"><input type="hidden" name="csrf" value="{escape(csrf)}">'
            f'<input type="hidden" name="action" value="signin">'
            f'<p>Sign in as <strong>@{escape(handle or "")}</strong> to see the apps you authorized.</p>'
            '<label for="password">Password</label>'
            '<input id="password" name="password" type="password" autocomplete="current-password" autofocus>'
            '<div class="buttons"><button class="primary" type="submit">Sign in</button></div></form>'
        )
        return _page("Your account", body)
    rows = "".join(
        f'<tr><td><strong>{escape(a["name"])}</strong><div class="muted">{escape(a["client_id"])}</div>'
        f'<div class="muted">Authorized {_date(a["created_at"])} &middot; {escape(a["scope"])}</div></td>'
        f'<td style="width:7rem;text-align:right"><form method="post" action="/account">'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}"><input type="hidden" name="action" value="revoke">'
        f'<input type="hidden" name="client_id" value="{escape(a["client_id"])}">'
        f'<button class="secondary" type="submit" aria-label="Revoke {escape(a["name"])}">Revoke</button></form></td></tr>'
        for a in apps
    ) or '<tr><td>No apps are authorized.</td></tr>'
    body = (
        f'<h1>Authorized apps</h1><p class="muted">@{escape(handle or "")} &middot; {escape(did or "")}</p>{_error(error)}'
        f"<table>{rows}</table>"
        f'<form method="post" action="/account"><input type="hidden" name="csrf" value="{escape(csrf)}">'
        '<input type="hidden" name="action" value="signout"><div class="buttons">'
        '<button class="secondary" type="submit">Sign out of this device</button></div></form>'
    )
    return _page("Authorized apps", body)
