"""Private account preferences (app.bsky.actor.getPreferences / putPreferences), as the reference PDS.

Owns the rules: every item needs a `$type` in the app.bsky namespace; known types get cheap
shape checks; the personal-details preference (birth date) is full-access only — app
passwords (even privileged ones) neither see nor set it, and a put by them leaves it alone;
`declaredAgePref` is read-only, derived from the birth date on read. Imports core.syntax,
errors and store.preferences; never xrpc. Tricky bit: a put replaces the whole namespace
(minus what the caller may not touch) in one write transaction.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any, Callable

from ...core import syntax as sx
from ...errors import InvalidRequest
from ...store import preferences as sql

NAMESPACE = "app.bsky"
PERSONAL_DETAILS = "app.bsky.actor.defs#personalDetailsPref"
DECLARED_AGE = "app.bsky.actor.defs#declaredAgePref"
FULL_ACCESS_ONLY = frozenset({PERSONAL_DETAILS})
READ_ONLY = frozenset({DECLARED_AGE})
MAX_PREFERENCES = 500
MAX_ITEM_BYTES = 512 * 1024


def in_namespace(name: str, namespace: str = NAMESPACE) -> bool:
    return name == namespace or name.startswith(namespace + ".")


def allowed(name: str, full_access: bool) -> bool:
    return full_access or name not in FULL_ACCESS_ONLY


# ---- cheap shape checks for the well-known preference types -----------------------------

def _fail(t: str, field: str, what: str) -> InvalidRequest:
    short = t.split("#", 1)[-1]
    return InvalidRequest(f"Input/preferences/{short}/{field} {what}")


def _need(v: dict, t: str, field: str, kind: type | tuple, required: bool = True) -> Any:
    value = v.get(field)
    if value is None:
        if required:
            raise _fail(t, field, "is required")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise _fail(t, field, f"must be a {name}")
    return value


def _str_list(v: dict, t: str, field: str, check: Callable[[object], bool] | None = None, max_len: int = 10_000) -> None:
    items = _need(v, t, field, list)
    if len(items) > max_len:
        raise _fail(t, field, f"must not have more than {max_len} items")
    for item in items:
        if not isinstance(item, str) or (check is not None and not check(item)):
            raise _fail(t, field, "has an invalid item")


def _obj_list(v: dict, t: str, field: str, required_fields: tuple[str, ...]) -> None:
    for item in _need(v, t, field, list):
        if not isinstance(item, dict) or any(item.get(f) is None for f in required_fields):
            raise _fail(t, field, f"items must be objects with {', '.join(required_fields)}")


def _adult(v: dict, t: str) -> None:
    _need(v, t, "enabled", bool)


def _content_label(v: dict, t: str) -> None:
    _need(v, t, "label", str)
    _need(v, t, "visibility", str)
    did = _need(v, t, "labelerDid", str, required=False)
    if did is not None and not sx.is_valid_did(did):
        raise _fail(t, "labelerDid", "must be a DID")


def _saved_feeds(v: dict, t: str) -> None:
    _str_list(v, t, "pinned", sx.is_valid_aturi)
    _str_list(v, t, "saved", sx.is_valid_aturi)
    _need(v, t, "timelineIndex", int, required=False)


def _saved_feeds_v2(v: dict, t: str) -> None:
    for item in _need(v, t, "items", list):
        if (not isinstance(item, dict) or not all(isinstance(item.get(f), str) for f in ("id", "type", "value"))
                or not isinstance(item.get("pinned"), bool)):
            raise _fail(t, "items", "items must be objects with id, type, value and pinned")


def _personal(v: dict, t: str) -> None:
    birth = _need(v, t, "birthDate", str, required=False)
    if birth is not None and not sx.is_valid_datetime(birth):
        raise _fail(t, "birthDate", "must be a datetime")


def _feed_view(v: dict, t: str) -> None:
    _need(v, t, "feed", str)


def _interests(v: dict, t: str) -> None:
    _str_list(v, t, "tags", max_len=100)


def _hidden_posts(v: dict, t: str) -> None:
    _str_list(v, t, "items", sx.is_valid_aturi)


_SHAPES: dict[str, Callable[[dict, str], None]] = {
    "app.bsky.actor.defs#adultContentPref": _adult,
    "app.bsky.actor.defs#contentLabelPref": _content_label,
    "app.bsky.actor.defs#savedFeedsPref": _saved_feeds,
    "app.bsky.actor.defs#savedFeedsPrefV2": _saved_feeds_v2,
    PERSONAL_DETAILS: _personal,
    "app.bsky.actor.defs#feedViewPref": _feed_view,
    "app.bsky.actor.defs#interestsPref": _interests,
    "app.bsky.actor.defs#mutedWordsPref": lambda v, t: _obj_list(v, t, "items", ("value", "targets")),
    "app.bsky.actor.defs#hiddenPostsPref": _hidden_posts,
    "app.bsky.actor.defs#labelersPref": lambda v, t: _obj_list(v, t, "labelers", ("did",)),
}


def check_preferences(value: Any) -> list[dict]:
    """The `preferences` array of a putPreferences body, checked; raises InvalidRequest."""
    if not isinstance(value, list):
        raise InvalidRequest('Input must have the property "preferences" (an array)')
    if len(value) > MAX_PREFERENCES:
        raise InvalidRequest(f"Input/preferences must not have more than {MAX_PREFERENCES} items")
    for item in value:
        if not isinstance(item, dict):
            raise InvalidRequest("Input/preferences items must be objects")
        t = item.get("$type")
        if not isinstance(t, str) or not t:
            raise InvalidRequest("Preference is missing a $type")
        shape = _SHAPES.get(t)
        if shape is not None:
            shape(item, t)
    return value


def age_on(birth_date: str, today: datetime.date) -> int | None:
    """Whole years from `birth_date` (an atproto datetime) to `today`; None if unreadable."""
    try:
        born = datetime.datetime.fromisoformat(birth_date.replace("Z", "+00:00")).date()
    except ValueError:
        return None
    years = today.year - born.year
    if (today.month, today.day) < (born.month, born.day):
        years -= 1
    return years


class PreferencesService:
    """get/put of one account's app.bsky preferences in the SQLite file."""

    def __init__(self, db: Any, clock: Callable[[], float] = time.time):
        self.db = db
        self.clock = clock

    async def get(self, did: str, *, full_access: bool) -> list[dict]:
        rows = self.db.read(lambda c: sql.list_preferences(c, did))
        prefs = [json.loads(value) for name, value in rows if in_namespace(name)]
        details = next((p for p in prefs if p.get("$type") == PERSONAL_DETAILS), None)
        if details is not None and isinstance(details.get("birthDate"), str):
            today = datetime.datetime.fromtimestamp(self.clock(), datetime.timezone.utc).date()
            age = age_on(details["birthDate"], today)
            if age is not None:
                prefs.append({"$type": DECLARED_AGE, "isOverAge13": age >= 13, "isOverAge16": age >= 16,
                              "isOverAge18": age >= 18})
        return [p for p in prefs if allowed(p.get("$type", ""), full_access)]

    async def put(self, did: str, preferences: Any, *, full_access: bool) -> None:
        """Replace the app.bsky preferences the caller may see with `preferences`."""
        prefs = check_preferences(preferences)
        outside = [p["$type"] for p in prefs if not in_namespace(p["$type"])]
        if outside:
            raise InvalidRequest(f"Some preferences are not in the {NAMESPACE} namespace")
        forbidden = [p["$type"] for p in prefs if not allowed(p["$type"], full_access)]
        if forbidden:
            raise InvalidRequest(f"Do not have authorization to set preferences: {', '.join(forbidden)}")
        rows = []
        for p in prefs:
            if p["$type"] in READ_ONLY:
                continue
            value = json.dumps(p, ensure_ascii=False, separators=(",", ":"))
            if len(value.encode("utf-8")) > MAX_ITEM_BYTES:
                raise InvalidRequest(f"Preference {p['$type']} is too large")
            rows.append((p["$type"], value))

        def replaceable(name: str) -> bool:
            return in_namespace(name) and allowed(name, full_access)

        await self.db.awrite(lambda c: sql.replace_preferences(c, did, replaceable, rows))
