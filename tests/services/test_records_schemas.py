"""The project's own schemas accept realistic records of every known type and refuse broken
ones at the right field (what the Bluesky app writes must pass; what it must not, must not)."""

from __future__ import annotations

import copy

import pytest

from tinypds.core.dagcbor import from_json
from tinypds.core.lexicon import LexiconValidationError
from tinypds.lexicons import default_catalog, record_types

NOW = "2026-01-01T12:00:00.000Z"
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
CID = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
BLOB_CID = "bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
POST_URI = f"at://{DID}/app.bsky.feed.post/3l3qo2vuowo2b"
LIST_URI = f"at://{DID}/app.bsky.graph.list/3l3qo2vuowo2c"
REF = {"uri": POST_URI, "cid": CID}


def blob(mime: str = "image/jpeg", size: int = 12345) -> dict:
    return {"$type": "blob", "ref": {"$link": BLOB_CID}, "mimeType": mime, "size": size}


FACETS = [
    {"index": {"byteStart": 0, "byteEnd": 5}, "features": [{"$type": "app.bsky.richtext.facet#mention", "did": DID}]},
    {"index": {"byteStart": 6, "byteEnd": 20}, "features": [{"$type": "app.bsky.richtext.facet#link", "uri": "https://example.com/a"}]},
    {"index": {"byteStart": 21, "byteEnd": 25}, "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "atproto"}]},
]
IMAGES = {"$type": "app.bsky.embed.images", "images": [
    {"image": blob(), "alt": "a cat", "aspectRatio": {"width": 1200, "height": 800}}]}

SAMPLES: dict[str, list[dict]] = {
    "app.bsky.feed.post": [
        {"text": "hello", "createdAt": NOW},
        {"text": "@alice https://example.com #atproto 🙂", "facets": FACETS, "langs": ["en", "pt-BR"],
         "tags": ["tiny"], "createdAt": NOW, "embed": IMAGES,
         "labels": {"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "nudity"}]}},
        {"text": "reply", "reply": {"root": REF, "parent": REF}, "createdAt": NOW,
         "embed": {"$type": "app.bsky.embed.external", "external": {
             "uri": "https://example.com", "title": "Example", "description": "", "thumb": blob()}}},
        {"text": "quote", "createdAt": NOW, "embed": {"$type": "app.bsky.embed.record", "record": REF}},
        {"text": "quote+media", "createdAt": NOW, "embed": {"$type": "app.bsky.embed.recordWithMedia",
         "record": {"$type": "app.bsky.embed.record", "record": REF}, "media": IMAGES}},
        {"text": "", "createdAt": NOW, "embed": {"$type": "app.bsky.embed.video", "video": blob("video/mp4", 5_000_000),
         "captions": [{"lang": "en", "file": blob("text/vtt", 300)}], "alt": "a clip",
         "aspectRatio": {"width": 16, "height": 9}}},
        {"text": "future embed types pass (open union)", "createdAt": NOW, "embed": {"$type": "com.example.embed#x", "a": 1}},
    ],
    "app.bsky.feed.like": [{"subject": REF, "createdAt": NOW}, {"subject": REF, "createdAt": NOW, "via": REF}],
    "app.bsky.feed.repost": [{"subject": REF, "createdAt": NOW}],
    "app.bsky.feed.threadgate": [{"post": POST_URI, "createdAt": NOW, "allow": [
        {"$type": "app.bsky.feed.threadgate#mentionRule"}, {"$type": "app.bsky.feed.threadgate#listRule", "list": LIST_URI}],
        "hiddenReplies": [POST_URI]}],
    "app.bsky.feed.postgate": [{"post": POST_URI, "createdAt": NOW, "detachedEmbeddingUris": [POST_URI],
                                "embeddingRules": [{"$type": "app.bsky.feed.postgate#disableRule"}]}],
    "app.bsky.feed.generator": [{"did": "did:web:feeds.example.com", "displayName": "Cats", "description": "cats only",
                                 "avatar": blob("image/png"), "createdAt": NOW}],
    "app.bsky.graph.follow": [{"subject": DID, "createdAt": NOW}],
    "app.bsky.graph.block": [{"subject": DID, "createdAt": NOW}],
    "app.bsky.graph.list": [{"name": "Friends", "purpose": "app.bsky.graph.defs#curatelist", "createdAt": NOW,
                             "description": "people", "descriptionFacets": FACETS}],
    "app.bsky.graph.listitem": [{"subject": DID, "list": LIST_URI, "createdAt": NOW}],
    "app.bsky.graph.listblock": [{"subject": LIST_URI, "createdAt": NOW}],
    "app.bsky.graph.starterpack": [{"name": "Starter", "list": LIST_URI, "feeds": [{"uri": POST_URI}], "createdAt": NOW}],
    "app.bsky.graph.verification": [{"subject": DID, "handle": "alice.example.com", "displayName": "Alice", "createdAt": NOW}],
    "app.bsky.actor.profile": [{}, {"displayName": "Alice", "description": "hi", "avatar": blob("image/png"),
                                    "banner": blob(), "pinnedPost": REF, "website": "https://alice.example.com",
                                    "createdAt": NOW}],
    "app.bsky.actor.status": [{"status": "app.bsky.actor.status#live", "createdAt": NOW, "durationMinutes": 30,
                               "embed": {"$type": "app.bsky.embed.external", "external": {
                                   "uri": "https://twitch.tv/x", "title": "live", "description": "now"}}}],
    "app.bsky.labeler.service": [{"policies": {"labelValues": ["spam", "!warn"], "labelValueDefinitions": [
        {"identifier": "spam", "severity": "inform", "blurs": "none", "locales": [
            {"lang": "en", "name": "Spam", "description": "Unwanted"}]}]},
        "reasonTypes": ["com.atproto.moderation.defs#reasonSpam"], "subjectTypes": ["account"],
        "subjectCollections": ["app.bsky.feed.post"], "createdAt": NOW}],
    "app.bsky.notification.declaration": [{"allowSubscriptions": "followers"}],
    "chat.bsky.actor.declaration": [{"allowIncoming": "following"}],
}

# (type, mutation, expected error path+reason)
BROKEN = [
    ("app.bsky.feed.post", lambda r: r.update(text="é" * 301), "Record/text must not be longer than 300 graphemes"),
    ("app.bsky.feed.post", lambda r: r.update(createdAt="yesterday"), "Record/createdAt must be a valid datetime"),
    ("app.bsky.feed.post", lambda r: r.update(langs=["en", "fr", "de", "es"]), "Record/langs must not have more than 3 elements"),
    ("app.bsky.feed.post", lambda r: r.update(langs=["not a language"]), "Record/langs/0 must be a valid language"),
    ("app.bsky.feed.post", lambda r: r.update(embed={**IMAGES, "images": IMAGES["images"] * 5}),
     "Record/embed/images must not have more than 4 elements"),
    ("app.bsky.feed.post", lambda r: r.update(embed={"$type": "app.bsky.embed.images", "images": [
        {"image": blob("image/jpeg", 3_000_000), "alt": ""}]}), "Record/embed/images/0/image is too big"),
    ("app.bsky.feed.post", lambda r: r.update(facets=[{"index": {"byteStart": -1, "byteEnd": 2}, "features": []}]),
     "Record/facets/0/index/byteStart can not be less than 0"),
    ("app.bsky.feed.post", lambda r: r.update(reply={"root": REF}), 'Record/reply must have the property "parent"'),
    ("app.bsky.feed.like", lambda r: r.update(subject={"uri": POST_URI, "cid": "nope"}), "Record/subject/cid must be a valid cid"),
    ("app.bsky.graph.follow", lambda r: r.update(subject="alice.example.com"), "Record/subject must be a valid did"),
    ("app.bsky.graph.list", lambda r: r.update(name=""), "Record/name must not be shorter than 1 characters"),
    ("app.bsky.actor.profile", lambda r: r.update(displayName="x" * 65), "Record/displayName must not be longer than 64 graphemes"),
    ("app.bsky.actor.profile", lambda r: r.update(avatar=blob("image/gif")), "Record/avatar mimeType image/gif is not accepted"),
    ("app.bsky.feed.threadgate", lambda r: r.update(allow=[{"$type": "app.bsky.feed.threadgate#mentionRule"}] * 6),
     "Record/allow must not have more than 5 elements"),
    ("chat.bsky.actor.declaration", lambda r: r.pop("allowIncoming"), 'Record must have the property "allowIncoming"'),
]


def _record(nsid: str, sample: dict) -> dict:
    return from_json({"$type": nsid, **copy.deepcopy(sample)})


def test_samples_cover_every_known_record_type():
    assert set(SAMPLES) == set(record_types()) - {"app.bsky.actor.contentVisibilityDeclaration"}


@pytest.mark.parametrize("nsid,i", [(n, i) for n, samples in SAMPLES.items() for i in range(len(samples))])
def test_realistic_records_validate(nsid, i):
    default_catalog().validate_record(nsid, _record(nsid, SAMPLES[nsid][i]))


@pytest.mark.parametrize("nsid,mutate,message", BROKEN, ids=[m for _, _, m in BROKEN])
def test_broken_records_fail_at_the_field(nsid, mutate, message):
    rec = copy.deepcopy(SAMPLES[nsid][-1 if nsid == "app.bsky.actor.profile" else 0])
    mutate(rec)
    with pytest.raises(LexiconValidationError) as exc:
        default_catalog().validate_record(nsid, _record(nsid, rec))
    assert str(exc.value).startswith(message)


def test_record_keys_follow_the_schema():
    cat = default_catalog()
    profile = _record("app.bsky.actor.profile", {})
    cat.validate_record("app.bsky.actor.profile", profile, "self")
    with pytest.raises(LexiconValidationError, match="Record key must be 'self'"):
        cat.validate_record("app.bsky.actor.profile", profile, "3l3qo2vuowo2b")
    post = _record("app.bsky.feed.post", SAMPLES["app.bsky.feed.post"][0])
    cat.validate_record("app.bsky.feed.post", post, "3l3qo2vuowo2b")
    with pytest.raises(LexiconValidationError, match="must be a TID"):
        cat.validate_record("app.bsky.feed.post", post, "self")
    gen = _record("app.bsky.feed.generator", SAMPLES["app.bsky.feed.generator"][0])
    cat.validate_record("app.bsky.feed.generator", gen, "cats-only")  # key type "any"
