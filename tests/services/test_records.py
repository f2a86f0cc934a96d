"""RecordService: validate semantics, $type and rkey rules, swaps, blob checks, reads."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from tinypds import errors
from tinypds.core.cid import cid_for_raw
from tinypds.core.tid import is_valid_tid
from tinypds.services.repo.records import MUST_NOT_EXIST, RecordService, WriteOp

from .repo_helpers import DID, open_env

NOW = "2026-01-01T00:00:00.000Z"


def run(coro):
    return asyncio.run(coro)


def post(text: str = "hello", **extra) -> dict:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": NOW, **extra}


@pytest.fixture
def env(tmp_path):
    e = open_env(tmp_path)
    yield e
    e.db.close()


@pytest.fixture
def svc(env):
    return RecordService(env.repo)


class FakeBlobs:
    """Stands in for BlobService.blob_meta: every known blob is a 10-byte PNG."""

    def __init__(self, known=()):
        self.known = set(known)

    def blob_meta(self, cid):
        return SimpleNamespace(cid=cid, mime="image/png", size=10, status="temp") if cid in self.known else None


# ---- validate semantics ------------------------------------------------------------------------
def test_create_known_type_is_valid_and_gets_a_tid(svc):
    out = run(svc.create("app.bsky.feed.post", post()))
    res = out.results[0]
    assert res.validation_status == "valid"
    rkey = res.uri.rsplit("/", 1)[1]
    assert res.uri.startswith(f"at://{DID}/app.bsky.feed.post/") and is_valid_tid(rkey)
    assert out.commit_meta() == {"cid": out.commit_cid, "rev": out.rev}
    assert svc.get_record("app.bsky.feed.post", rkey).value["text"] == "hello"


def test_invalid_known_record_names_the_field_like_the_reference(svc):
    with pytest.raises(errors.InvalidRequest) as exc:
        run(svc.create("app.bsky.feed.post", post("x" * 301)))
    assert exc.value.message == "Invalid app.bsky.feed.post record: Record/text must not be longer than 300 graphemes"
    with pytest.raises(errors.InvalidRequest, match='Record must have the property "createdAt"'):
        run(svc.create("app.bsky.feed.post", {"text": "no date"}))
    with pytest.raises(errors.InvalidRequest, match=r"Record/embed/images/0 must have the property \"alt\""):
        img = {"$type": "blob", "ref": {"$link": str(cid_for_raw(b"x"))}, "mimeType": "image/png", "size": 1}
        run(svc.create("app.bsky.feed.post", post(embed={"$type": "app.bsky.embed.images", "images": [{"image": img}]})))


def test_validate_false_skips_validation(svc):
    out = run(svc.create("app.bsky.feed.post", post("x" * 301), validate=False))
    assert out.results[0].validation_status is None


def test_unknown_type_passes_as_unknown_unless_validate_true(svc):
    rec = {"$type": "com.example.thing", "anything": [1, 2]}
    out = run(svc.create("com.example.thing", rec))
    assert out.results[0].validation_status == "unknown"
    with pytest.raises(errors.InvalidRequest, match="Unknown lexicon type: com.example.thing"):
        run(svc.create("com.example.thing", rec, validate=True))
    assert run(svc.create("com.example.thing", rec, validate=False)).results[0].validation_status is None


def test_type_is_filled_in_and_must_match(svc):
    out = run(svc.create("app.bsky.feed.post", {"text": "t", "createdAt": NOW}))
    view = svc.get_record("app.bsky.feed.post", out.results[0].uri.rsplit("/", 1)[1])
    assert view.value["$type"] == "app.bsky.feed.post"
    with pytest.raises(errors.InvalidRequest, match="Invalid \\$type: expected app.bsky.feed.post, got app.bsky.feed.like"):
        run(svc.create("app.bsky.feed.post", {**post(), "$type": "app.bsky.feed.like"}))
    with pytest.raises(errors.InvalidRequest, match="Invalid \\$type"):
        run(svc.create("app.bsky.feed.post", {**post(), "$type": "app.bsky.feed.like"}, validate=False))


def test_record_data_model_errors(svc):
    with pytest.raises(errors.InvalidRequest, match="floats"):
        run(svc.create("com.example.thing", {"n": 1.5}))
    with pytest.raises(errors.InvalidRequest, match="must be an object"):
        run(svc.create("com.example.thing", ["not", "an", "object"]))


# ---- record keys -------------------------------------------------------------------------------------
def test_singleton_defaults_to_self_and_refuses_other_keys(svc):
    profile = {"$type": "app.bsky.actor.profile", "displayName": "Alice"}
    out = run(svc.create("app.bsky.actor.profile", profile))
    assert out.results[0].uri == f"at://{DID}/app.bsky.actor.profile/self"
    with pytest.raises(errors.InvalidRequest) as exc:
        run(svc.put("app.bsky.actor.profile", "other", profile))
    assert exc.value.message == 'Invalid record key for app.bsky.actor.profile: Expected "self" (got "other")'
    assert run(svc.put("app.bsky.actor.profile", "other", profile, validate=False)).results[0].validation_status is None


def test_tid_type_refuses_a_non_tid_key_and_bad_syntax(svc):
    with pytest.raises(errors.InvalidRequest) as exc:
        run(svc.create("app.bsky.feed.post", post(), rkey="mykey"))
    assert exc.value.message == 'Invalid record key for app.bsky.feed.post: Invalid TID string (got "mykey")'
    assert run(svc.create("app.bsky.feed.post", post(), rkey="mykey", validate=False)).results[0].uri.endswith("/mykey")
    with pytest.raises(errors.InvalidRequest, match="Invalid record key"):
        run(svc.create("com.example.thing", {"a": 1}, rkey="bad/key"))
    with pytest.raises(errors.InvalidRequest, match="Invalid collection"):
        run(svc.create("not an nsid", {"a": 1}))
    out = run(svc.create("com.example.thing", {"a": 1}, rkey="any-key:ok"))
    assert out.results[0].uri.endswith("/com.example.thing/any-key:ok")


# ---- put / delete / swaps --------------------------------------------------------------------------
def test_put_creates_then_updates_with_swaps(svc):
    first = run(svc.put("com.example.thing", "k1", {"v": 1}, swap_record=MUST_NOT_EXIST))
    assert first.results[0].action == "create"
    cid1 = first.results[0].cid
    with pytest.raises(errors.InvalidSwap):
        run(svc.put("com.example.thing", "k1", {"v": 2}, swap_record=MUST_NOT_EXIST))
    with pytest.raises(errors.InvalidSwap):
        run(svc.put("com.example.thing", "k1", {"v": 2}, swap_record=str(cid_for_raw(b"nope"))))
    second = run(svc.put("com.example.thing", "k1", {"v": 2}, swap_record=cid1))
    assert second.results[0].action == "update" and second.rev > first.rev
    with pytest.raises(errors.InvalidSwap):
        run(svc.create("com.example.thing", {"v": 3}, swap_commit=first.commit_cid))
    third = run(svc.create("com.example.thing", {"v": 3}, swap_commit=second.commit_cid))
    assert third.rev > second.rev


def test_bad_swap_cid_is_invalid_request(svc):
    with pytest.raises(errors.InvalidRequest, match="swapCommit is not a valid CID"):
        run(svc.create("com.example.thing", {"v": 1}, swap_commit="notacid"))


def test_delete_absent_is_a_noop_unless_swapped(svc):
    out = run(svc.delete("com.example.thing", "missing"))
    assert out.commit_meta() is None
    with pytest.raises(errors.InvalidSwap):
        run(svc.delete("com.example.thing", "missing", swap_record=str(cid_for_raw(b"x"))))
    made = run(svc.put("com.example.thing", "k", {"v": 1}))
    gone = run(svc.delete("com.example.thing", "k", swap_commit=made.commit_cid))
    assert gone.commit_meta() is not None and gone.rev > made.rev
    with pytest.raises(errors.RecordNotFound):
        svc.get_record("com.example.thing", "k")


# ---- applyWrites ---------------------------------------------------------------------------------
def test_apply_writes_is_one_commit_and_all_or_nothing(svc, env):
    run(svc.put("com.example.thing", "gone", {"v": 0}))
    made = run(svc.put("com.example.thing", "old", {"v": 0}))
    ops = [WriteOp("create", "app.bsky.feed.post", None, post(f"p{i}")) for i in range(5)]
    ops += [WriteOp("update", "com.example.thing", "old", {"v": 1}), WriteOp("delete", "com.example.thing", "gone")]
    with pytest.raises(errors.InvalidRequest, match="Record/text"):
        run(svc.apply_writes(ops + [WriteOp("create", "app.bsky.feed.post", None, post("x" * 400))]))
    with pytest.raises(errors.InvalidRequest):  # the store refuses too: the batch must leave nothing behind
        run(svc.apply_writes(ops + [WriteOp("update", "com.example.thing", "absent", {"v": 1})]))
    assert svc.get_record("com.example.thing", "old").value["v"] == 0  # nothing of the failed batch
    out = run(svc.apply_writes(ops))
    assert [r.action for r in out.results] == ["create"] * 5 + ["update", "delete"]
    assert [r.validation_status for r in out.results] == ["valid"] * 5 + ["unknown", None]
    assert out.rev > made.rev
    assert env.repo.get_root().rev == out.rev


def test_apply_writes_limits(svc):
    with pytest.raises(errors.InvalidRequest, match="Too many writes. Max: 200"):
        run(svc.apply_writes([WriteOp("create", "com.example.thing", None, {"v": i}) for i in range(201)]))
    empty = run(svc.apply_writes([]))
    assert empty.results == [] and empty.commit_meta() is None
    with pytest.raises(errors.InvalidRequest, match="Unknown write action"):
        run(svc.apply_writes([WriteOp("upsert", "com.example.thing", "k", {"v": 1})]))
    out = run(svc.apply_writes([WriteOp("create", "com.example.thing", None, {"v": i}) for i in range(200)]))
    assert len(out.results) == 200 and len({r.uri for r in out.results}) == 200


# ---- blobs ---------------------------------------------------------------------------------------
def test_records_must_reference_uploaded_blobs(env):
    known = cid_for_raw(b"uploaded image")
    svc = RecordService(env.repo, blobs=FakeBlobs([known]))

    def profile(cid):
        return {"$type": "app.bsky.actor.profile",
                "avatar": {"$type": "blob", "ref": {"$link": str(cid)}, "mimeType": "image/png", "size": 10}}

    missing = cid_for_raw(b"never uploaded")
    with pytest.raises(errors.BlobNotFound, match=f"Could not find blob: {missing}"):
        run(svc.put("app.bsky.actor.profile", "self", profile(missing)))
    prepared = svc.prepare(WriteOp("update", "app.bsky.actor.profile", "self", profile(known)))
    assert [(b.cid, b.mime_type, b.size) for b in prepared.blobs] == [(known, "image/png", 10)]
    assert run(svc.put("app.bsky.actor.profile", "self", profile(known))).results[0].validation_status == "valid"
    bad_mime = profile(known)
    bad_mime["avatar"]["mimeType"] = "image/gif"
    with pytest.raises(errors.InvalidRequest, match="Record/avatar mimeType image/gif is not accepted"):
        run(svc.put("app.bsky.actor.profile", "self", bad_mime))
    bad_mime["avatar"]["mimeType"] = "image/jpeg"  # accepted by the schema, but not what was uploaded
    with pytest.raises(errors.InvalidRequest, match="Referenced Mimetype does not match stored blob. Expected: image/png"):
        run(svc.put("app.bsky.actor.profile", "self", bad_mime))
    small = profile(known)
    small["avatar"]["size"] = 5  # a lie that could slip a large blob under maxSize
    with pytest.raises(errors.InvalidRequest, match="size does not match"):
        run(svc.put("app.bsky.actor.profile", "self", small))


# ---- reads ---------------------------------------------------------------------------------------
def test_get_record_not_found_message_and_cid(svc):
    with pytest.raises(errors.RecordNotFound) as exc:
        svc.get_record("app.bsky.feed.post", "3jzfcijpj2z2a")
    assert exc.value.message == f"Could not locate record: at://{DID}/app.bsky.feed.post/3jzfcijpj2z2a"
    out = run(svc.put("com.example.thing", "k", {"v": 1}))
    assert str(svc.get_record("com.example.thing", "k", out.results[0].cid).cid) == out.results[0].cid
    with pytest.raises(errors.RecordNotFound):
        svc.get_record("com.example.thing", "k", str(cid_for_raw(b"other")))


def test_list_records_pages_both_ways(svc):
    run(svc.apply_writes([WriteOp("create", "com.example.thing", f"k{i:02d}", {"v": i}) for i in range(7)]))
    page, cursor = svc.list_records("com.example.thing", limit=3)
    assert [v.uri.rsplit("/", 1)[1] for v in page] == ["k06", "k05", "k04"] and cursor == "k04"
    seen = [v.value["v"] for v in page]
    while cursor:
        page, cursor = svc.list_records("com.example.thing", limit=3, cursor=cursor)
        seen += [v.value["v"] for v in page]
    assert seen == [6, 5, 4, 3, 2, 1, 0]
    page, _ = svc.list_records("com.example.thing", limit=2, reverse=True)
    assert [v.value["v"] for v in page] == [0, 1]
    with pytest.raises(errors.InvalidRequest):
        svc.list_records("com.example.thing", limit=101)
    assert svc.collections() == ["com.example.thing"]


def test_put_of_an_unchanged_record_makes_no_commit(svc, env):
    first = run(svc.put("com.example.thing", "same", {"v": 1}))
    again = run(svc.put("com.example.thing", "same", {"v": 1}))
    assert again.commit_meta() is None and again.results[0].cid == first.results[0].cid
    assert env.repo.get_root().rev == first.rev
    swapped = run(svc.put("com.example.thing", "same", {"v": 1}, swap_record=first.results[0].cid))
    assert swapped.commit_meta() is None
    with pytest.raises(errors.InvalidSwap):  # a swap that does not hold still fails
        run(svc.put("com.example.thing", "same", {"v": 1}, swap_record=MUST_NOT_EXIST))
    changed = run(svc.put("com.example.thing", "same", {"v": 2}))
    assert changed.rev > first.rev
