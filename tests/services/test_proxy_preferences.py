"""services.account.preferences on a real SQLite file: the reference PDS's rules for app.bsky
preferences (namespace, full-access-only birth date, read-only declared age, replace-all)."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from tinypds.errors import InvalidRequest
from tinypds.services.account.preferences import DECLARED_AGE, PERSONAL_DETAILS, PreferencesService, age_on
from tinypds.store.db import Database

DID = "did:plc:abcdefghijklmnopqrstuvwx"
OTHER = "did:plc:zyxwvutsrqponmlkjihgfedc"
ADULT = {"$type": "app.bsky.actor.defs#adultContentPref", "enabled": True}
LABEL = {"$type": "app.bsky.actor.defs#contentLabelPref", "label": "gore", "visibility": "hide"}
BIRTH = {"$type": PERSONAL_DETAILS, "birthDate": "2010-06-15T00:00:00.000Z"}
# 2026-06-14 (UTC): one day before the 16th birthday of BIRTH
CLOCK = datetime.datetime(2026, 6, 14, 12, tzinfo=datetime.timezone.utc).timestamp()


@pytest.fixture
def prefs(tmp_path):
    db = Database.open(tmp_path / "tinypds.sqlite")
    yield PreferencesService(db, clock=lambda: CLOCK)
    db.close()


def run(coro):
    return asyncio.run(coro)


def test_round_trip_keeps_order_and_unknown_types(prefs):
    future = {"$type": "app.bsky.actor.defs#someFuturePref", "x": [1, {"y": "z"}]}
    run(prefs.put(DID, [LABEL, ADULT, future], full_access=True))
    assert run(prefs.get(DID, full_access=True)) == [LABEL, ADULT, future]
    assert run(prefs.get(OTHER, full_access=True)) == []
    run(prefs.put(DID, [ADULT], full_access=True))  # a put replaces the whole set
    assert run(prefs.get(DID, full_access=True)) == [ADULT]


def test_declared_age_is_derived_and_never_stored(prefs):
    declared = {"$type": DECLARED_AGE, "isOverAge13": False, "isOverAge16": False, "isOverAge18": False}
    run(prefs.put(DID, [BIRTH, declared], full_access=True))
    got = run(prefs.get(DID, full_access=True))
    assert got == [BIRTH, {"$type": DECLARED_AGE, "isOverAge13": True, "isOverAge16": False, "isOverAge18": False}]
    run(prefs.put(DID, [ADULT], full_access=True))
    assert run(prefs.get(DID, full_access=True)) == [ADULT]


def test_app_passwords_neither_see_nor_set_nor_drop_the_birth_date(prefs):
    run(prefs.put(DID, [BIRTH, ADULT], full_access=True))
    seen = run(prefs.get(DID, full_access=False))
    assert [p["$type"] for p in seen] == [ADULT["$type"], DECLARED_AGE]
    with pytest.raises(InvalidRequest, match="personalDetailsPref"):
        run(prefs.put(DID, [BIRTH], full_access=False))
    run(prefs.put(DID, [LABEL], full_access=False))
    assert run(prefs.get(DID, full_access=True))[:2] == [BIRTH, LABEL]


@pytest.mark.parametrize("bad, match", [
    ("nope", "array"),
    ([["not", "an", "object"]], "objects"),
    ([{"enabled": True}], r"missing a \$type"),
    ([{"$type": ""}], r"missing a \$type"),
    ([{"$type": "com.example.pref"}], "namespace"),
    ([{"$type": "app.bskyfake.pref"}], "namespace"),
    ([{"$type": "app.bsky.actor.defs#adultContentPref"}], "enabled is required"),
    ([{"$type": "app.bsky.actor.defs#adultContentPref", "enabled": 1}], "enabled must be a bool"),
    ([{"$type": "app.bsky.actor.defs#savedFeedsPref", "pinned": ["nope"], "saved": []}], "pinned"),
    ([{"$type": "app.bsky.actor.defs#savedFeedsPrefV2", "items": [{"id": "a", "type": "feed"}]}], "items"),
    ([{"$type": PERSONAL_DETAILS, "birthDate": "15/06/2010"}], "birthDate"),
    ([{"$type": "app.bsky.actor.defs#contentLabelPref", "label": "x", "visibility": "hide", "labelerDid": "x"}], "labelerDid"),
    ([{"$type": "app.bsky.actor.defs#interestsPref", "tags": ["t"] * 101}], "tags"),
    ([{"$type": "app.bsky.actor.defs#mutedWordsPref", "items": [{"value": "x"}]}], "items"),
    ([ADULT] * 501, "500"),
])
def test_invalid_input_is_refused_and_nothing_changes(prefs, bad, match):
    run(prefs.put(DID, [ADULT], full_access=True))
    with pytest.raises(InvalidRequest, match=match):
        run(prefs.put(DID, bad, full_access=True))
    assert run(prefs.get(DID, full_access=True)) == [ADULT]


def test_age_on():
    today = datetime.date(2026, 6, 14)
    assert age_on("2010-06-14T00:00:00Z", today) == 16
    assert age_on("2010-06-15T00:00:00Z", today) == 15
    assert age_on("2008-02-29T00:00:00.000Z", datetime.date(2026, 2, 28)) == 17
    assert age_on("2008-02-29T00:00:00.000Z", datetime.date(2026, 3, 1)) == 18
    assert age_on("not a date", today) is None
