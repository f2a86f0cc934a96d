"""The network-health report row: one JSON document in `meta('health')`.

Only SQL. The server's health watcher (services.sync.health) replaces the document after each
round of checks; `tinypds status`, a separate process, reads it. No schema migration: the
`meta` key/value table already exists. Nothing secret is stored here (relay answers only).
"""

from __future__ import annotations

import json
from typing import Any

Conn = Any
KEY = "health"


def get_report(conn: Conn) -> dict | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (KEY,)).fetchone()
    if not row or not isinstance(row[0], str):
        return None
    try:
        doc = json.loads(row[0])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def put_report(conn: Conn, doc: dict) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (KEY, json.dumps(doc, separators=(",", ":"), sort_keys=True)),
    )
