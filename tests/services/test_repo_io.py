"""Repo CAR import / export / verify: round trips, re-signing, refusals, and bad input rollback."""

from __future__ import annotations

import asyncio
import io

import pytest

from tinypds.core import car as car_core
from tinypds.core import dagcbor
from tinypds.core.cid import cid_for_dagcbor
from tinypds.core.commit import build_commit_from_root
from tinypds.services.repo.car_io import (RepoIOError, aiter_export, import_car, iter_export, verify_car_file, verify_stored)
from tinypds.store import records as records_db

from .repo_helpers import DID, OTHER_DID, build_repo_blocks, car_bytes, fixed_key, open_env, snapshot

CAR_KEY = fixed_key("car-signer")
CAR_DID_KEY = CAR_KEY.public_key().did_key()


@pytest.fixture(scope="module")
def repo_car():
    root, blocks = build_repo_blocks(300, CAR_KEY)
    return root, blocks


def export_bytes(db) -> bytes:
    return b"".join(iter_export(db))


def roots_and_blocks(data: bytes):
    return car_core.read_car_bytes(data)


def test_import_into_empty_dir_keeps_repo_as_signed(tmp_path, repo_car):
    root, blocks = repo_car
    env = open_env(tmp_path, did=None)
    try:
        res = import_car(env.db, io.BytesIO(car_bytes([root], blocks)), did_key=CAR_DID_KEY)
        assert res.commit_cid == root and not res.resigned and res.records == 300
        assert res.signature.startswith("valid") and res.unreferenced_blocks == 0
        out = export_bytes(env.db)
        roots, out_blocks = roots_and_blocks(out)
        assert roots == [root]
        assert out_blocks[0][0] == root  # commit first
        assert sorted(out_blocks) == sorted(blocks)  # exactly the same blocks
        summary = verify_stored(env.db, did_key=CAR_DID_KEY)
        assert (summary.records, summary.blocks, summary.commit_cid) == (300, len(blocks), root)
        # a second data dir imports our export and exports the same repo again
        env2 = open_env(tmp_path, did=None, name="data2")
        try:
            res2 = import_car(env2.db, io.BytesIO(out), did_key=CAR_DID_KEY)
            assert res2.commit_cid == root and res2.data_cid == res.data_cid
            assert export_bytes(env2.db) == out
            rows = lambda db: db.read(lambda c: list(records_db.iter_index_in_mst_order(c)))  # noqa: E731
            assert rows(env2.db) == rows(env.db)
        finally:
            env2.db.close()
        account = env.db.read(lambda c: c.execute("SELECT did, status FROM account").fetchall())
        assert account == [(DID, "offline-copy")]
    finally:
        env.db.close()


def test_import_without_key_says_signature_not_checked(tmp_path, repo_car):
    root, blocks = repo_car
    env = open_env(tmp_path, did=None)
    try:
        res = import_car(env.db, io.BytesIO(car_bytes([root], blocks)))
        assert res.signature.startswith("NOT CHECKED")
    finally:
        env.db.close()


def test_verify_car_file(tmp_path, repo_car):
    root, blocks = repo_car
    path = tmp_path / "r.car"
    path.write_bytes(car_bytes([root], blocks))
    res = verify_car_file(path, did_key=CAR_DID_KEY)
    assert res.records == 300 and res.commit_cid == root and res.signature.startswith("valid")


def test_import_into_same_did_resigns_with_higher_rev(tmp_path, repo_car):
    root, blocks = repo_car
    env = open_env(tmp_path)  # account DID with its own key
    try:
        asyncio.run(env.repo.create_record("app.bsky.feed.post", {"$type": "app.bsky.feed.post", "text": "old"}, rkey="old"))
        current = env.repo.get_root()
        res = import_car(env.db, io.BytesIO(car_bytes([root], blocks)), did_key=CAR_DID_KEY, keys=env.keys)
        assert res.resigned and res.commit_cid != root
        assert res.rev > res.imported_rev and res.rev > current.rev
        assert env.repo.get_record("app.bsky.feed.post", "old") is None  # the repo is now the imported one
        assert env.repo.count_records() == 300
        summary = verify_stored(env.db, keys=env.keys)  # signed by the account key now
        assert summary.signature.startswith("valid (signed by this account") and summary.data_cid == res.data_cid
        ev = env.db.read(lambda c: c.execute("SELECT type FROM events ORDER BY seq DESC LIMIT 1").fetchone()[0])
        assert ev == "#sync"
        # writes continue on top of the imported repo with higher revs
        r = asyncio.run(env.repo.create_record("app.bsky.feed.post", {"$type": "app.bsky.feed.post", "text": "new"}))
        assert r.rev > res.rev and env.repo.count_records() == 301
        # the old commit block is gone: blocks = imported minus its commit, plus our commit(s)
        assert verify_stored(env.db, keys=env.keys).records == 301
    finally:
        env.db.close()


def test_import_of_another_did_is_refused(tmp_path):
    root, blocks = build_repo_blocks(20, CAR_KEY, did=OTHER_DID)
    env = open_env(tmp_path)
    try:
        before = snapshot(env.db)
        with pytest.raises(RepoIOError, match=f"repo of {OTHER_DID}.*holds {DID}"):
            import_car(env.db, io.BytesIO(car_bytes([root], blocks)), did_key=CAR_DID_KEY, keys=env.keys)
        assert snapshot(env.db) == before
    finally:
        env.db.close()


# ---- bad input: a clear error and an untouched database -----------------------------------


def _resign(blocks, new_data_root, key=CAR_KEY, did=DID):
    cid, block = build_commit_from_root(did, new_data_root, "3m2qrrgwdsk2c", key.sign)
    return cid, block


def _replace_node_noncanonical(root, blocks):
    """Re-encode the MST root node with a non-minimal integer and re-sign a commit over it."""
    commit = dagcbor.decode(blocks[0][1])
    data_root = commit["data"]
    node = dict(blocks)[data_root]
    assert b"\x61\x70\x00" in node
    bad = node.replace(b"\x61\x70\x00", b"\x61\x70\x18\x00", 1)  # p: 0 as a 2-byte integer
    bad_cid = cid_for_dagcbor(bad)
    new_root, new_commit = _resign(root, bad_cid)
    rest = [(c, d) for c, d in blocks[1:] if c != data_root]
    return car_bytes([new_root], [(new_root, new_commit), (bad_cid, bad)] + rest)


def _bad_cases(root, blocks):
    good = car_bytes([root], blocks)
    rec_idx = next(i for i, (c, d) in enumerate(blocks) if b"$type" in d and i > 0)
    node_idx = len(blocks) - 1  # the builder emits the root node last; take an inner one instead
    node_idx = next(i for i in range(len(blocks) - 2, 0, -1) if b"$type" not in blocks[i][1])
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    other_key = fixed_key("impostor")
    bad_sig_commit = build_commit_from_root(DID, dagcbor.decode(blocks[0][1])["data"], "3m2qrrgwdsk2b", other_key.sign)
    bad_rev_commit = build_commit_from_root(DID, dagcbor.decode(blocks[0][1])["data"], "not-a-tid", CAR_KEY.sign)
    return {
        "rev not a TID": (car_bytes([bad_rev_commit[0]], [bad_rev_commit] + blocks[1:]), "is not a TID"),
        "truncated": (good[: len(good) - 7], "truncated CAR"),
        "flipped byte": (bytes(flipped), "does not match its hash|corrupt|invalid|not"),
        "non-canonical MST node": (_replace_node_noncanonical(root, blocks), "non-canonical"),
        "bad signature": (car_bytes([bad_sig_commit[0]], [bad_sig_commit] + blocks[1:]), "signature does not verify"),
        "no root": (car_bytes([], blocks), "no root"),
        "duplicate block": (car_bytes([root], blocks + [blocks[rec_idx]]), "more than once"),
        "missing record block": (car_bytes([root], blocks[:rec_idx] + blocks[rec_idx + 1:]), "missing record block"),
        "missing MST node": (car_bytes([root], blocks[:node_idx] + blocks[node_idx + 1:]), "missing MST node"),
        "missing commit": (car_bytes([root], blocks[1:]), "commit block .* is missing"),
        "not a CAR": (b"hello world, not a car", "not a valid CAR|CAR"),
        "empty file": (b"", "CAR"),
    }


@pytest.mark.parametrize("existing", ["empty dir", "same-DID account"])
def test_bad_input_is_refused_and_database_untouched(tmp_path, repo_car, existing):
    root, blocks = repo_car
    env = open_env(tmp_path, did=None if existing == "empty dir" else DID)
    try:
        if env.repo is not None:
            asyncio.run(env.repo.create_record("app.bsky.feed.post", {"$type": "app.bsky.feed.post", "text": "keep"}, rkey="keep"))
        before = snapshot(env.db)
        export_before = export_bytes(env.db) if env.repo is not None else None

        def schema(conn):  # a full import drops and rebuilds indexes: a rollback must restore them
            return conn.execute("SELECT type, name, sql FROM sqlite_schema ORDER BY name").fetchall()
        schema_before = env.db.read(schema)
        for name, (data, pattern) in _bad_cases(root, blocks).items():
            with pytest.raises(RepoIOError, match=pattern) as info:
                import_car(env.db, io.BytesIO(data), did_key=CAR_DID_KEY, keys=env.keys)
            assert "\n" not in str(info.value), name
            assert snapshot(env.db) == before, name
            assert env.db.read(schema) == schema_before, name
        if export_before is not None:
            assert export_bytes(env.db) == export_before
            verify_stored(env.db, keys=env.keys)
    finally:
        env.db.close()


def test_noncanonical_node_refused_even_without_key(tmp_path, repo_car):
    root, blocks = repo_car
    env = open_env(tmp_path, did=None)
    try:
        with pytest.raises(RepoIOError, match="invalid MST.*non-canonical"):
            import_car(env.db, io.BytesIO(_replace_node_noncanonical(root, blocks)))
        assert snapshot(env.db)["blocks"] == 0
    finally:
        env.db.close()


# ---- verify of a damaged stored repo ---------------------------------------------------------


def test_verify_stored_detects_damage(tmp_path, repo_car):
    root, blocks = repo_car
    env = open_env(tmp_path, did=None)
    try:
        import_car(env.db, io.BytesIO(car_bytes([root], blocks)), did_key=CAR_DID_KEY)
        rec = env.db.read(lambda c: c.execute("SELECT collection, rkey, cid FROM records LIMIT 1 OFFSET 7").fetchone())

        env.db.write(lambda c: records_db.delete_record(c, rec[0], rec[1]))
        with pytest.raises(RepoIOError, match="in the MST but not in the record index"):
            verify_stored(env.db)
        env.db.write(lambda c: records_db.put_record(c, rec[0], rec[1], rec[2], "x"))
        verify_stored(env.db)

        env.db.write(lambda c: records_db.put_record(c, "zzz.extra", "k", rec[2], "x"))
        with pytest.raises(RepoIOError, match="zzz.extra/k is in the record index but not in the MST"):
            verify_stored(env.db)
        env.db.write(lambda c: records_db.delete_record(c, "zzz.extra", "k"))

        env.db.write(lambda c: c.execute("UPDATE blocks SET data = CAST(data || x'00' AS BLOB) WHERE cid = ?", (rec[2],)))
        with pytest.raises(RepoIOError, match="does not match its hash"):
            verify_stored(env.db)
        env.db.write(lambda c: c.execute("UPDATE blocks SET data = substr(data, 1, length(data) - 1) WHERE cid = ?", (rec[2],)))
        verify_stored(env.db)

        with pytest.raises(RepoIOError, match="signature does not verify"):
            verify_stored(env.db, did_key=fixed_key("impostor").public_key().did_key())
    finally:
        env.db.close()


def test_async_export_matches_sync_export(tmp_path, repo_car):
    root, blocks = repo_car
    env = open_env(tmp_path, did=None)
    try:
        import_car(env.db, io.BytesIO(car_bytes([root], blocks)))

        async def collect():
            return b"".join([chunk async for chunk in aiter_export(env.db)])

        assert asyncio.run(collect()) == export_bytes(env.db)
    finally:
        env.db.close()


def test_export_without_repo_is_a_clear_error(tmp_path):
    env = open_env(tmp_path, did=None)
    try:
        with pytest.raises(RepoIOError, match="no repo"):
            export_bytes(env.db)
    finally:
        env.db.close()


def test_async_export_consumer_can_stop_early(tmp_path, repo_car):
    root, blocks = repo_car
    env = open_env(tmp_path, did=None)
    try:
        import_car(env.db, io.BytesIO(car_bytes([root], blocks)))

        async def first_chunk():
            agen = aiter_export(env.db, queue_size=1, chunk_size=1024)  # many chunks: the producer blocks
            chunk = await agen.__anext__()
            await agen.aclose()
            await asyncio.sleep(0.5)  # the producer notices and releases its snapshot
            return chunk

        chunk = asyncio.run(first_chunk())
        assert chunk.startswith(car_core.encode_header([root]))
        # nothing holds a read snapshot any more: a checkpoint can truncate the whole WAL
        env.db.write(lambda c: c.execute("INSERT INTO meta (key, value) VALUES ('x', 1)"))
        log, done = env.db.checkpoint()
        assert log == done
    finally:
        env.db.close()


def test_verify_stored_detects_a_missing_record_block(tmp_path, repo_car):
    root, blocks = repo_car
    env = open_env(tmp_path, did=None)
    try:
        import_car(env.db, io.BytesIO(car_bytes([root], blocks)), did_key=CAR_DID_KEY)
        rec = env.db.read(lambda c: c.execute("SELECT collection, rkey, cid FROM records LIMIT 1 OFFSET 3").fetchone())
        env.db.write(lambda c: c.execute("DELETE FROM blocks WHERE cid = ?", (rec[2],)))
        with pytest.raises(RepoIOError, match=f"missing record block .* for {rec[0]}/{rec[1]}"):
            verify_stored(env.db)
        with pytest.raises(RepoIOError, match=f"missing record {rec[0]}/{rec[1]} "):  # names the right one
            b"".join(iter_export(env.db))
    finally:
        env.db.close()


def test_duplicate_block_across_batches_is_refused(tmp_path, repo_car, monkeypatch):
    from tinypds.services.repo import car_io as repo_io

    monkeypatch.setattr(repo_io, "BLOCK_BATCH", 50)
    root, blocks = repo_car
    env = open_env(tmp_path, did=None)
    try:
        dup = blocks[10]
        with pytest.raises(RepoIOError, match=f"holds block {dup[0]} more than once"):
            import_car(env.db, io.BytesIO(car_bytes([root], blocks + [dup])))
        assert snapshot(env.db)["blocks"] == 0
        res = import_car(env.db, io.BytesIO(car_bytes([root], blocks)))  # small batches still import fine
        assert res.records == 300 and res.blocks == len(blocks)
    finally:
        env.db.close()


def test_two_records_sharing_one_block(tmp_path):
    from tinypds.core.mst import TreeBuilder

    data = dagcbor.encode({"$type": "app.bsky.feed.like", "createdAt": "2024-01-01T00:00:00Z"})
    cid = cid_for_dagcbor(data)
    nodes = []
    builder = TreeBuilder(lambda c, d: nodes.append((c, d)))
    for rkey in ("3kaaaaaaaaaa2", "3kaaaaaaaaab2", "3kaaaaaaaaac2"):
        builder.add(f"app.bsky.feed.like/{rkey}", cid)
    commit = build_commit_from_root(DID, builder.finish(), "3kaaaaaaaaad2", CAR_KEY.sign)
    car = car_bytes([commit[0]], [commit, (cid, data)] + nodes)
    env = open_env(tmp_path, did=None)
    try:
        res = import_car(env.db, io.BytesIO(car), did_key=CAR_DID_KEY)
        assert res.records == 3 and res.unreferenced_blocks == 0
        assert verify_stored(env.db).records == 3
        roots, out = car_core.read_car_bytes(export_bytes(env.db))
        assert roots == [commit[0]] and sorted(out) == sorted([commit, (cid, data)] + nodes)  # the shared block once
    finally:
        env.db.close()


def test_offline_copy_is_replaced_by_newer_but_not_older(tmp_path):
    old_root, old_blocks = build_repo_blocks(30, CAR_KEY, rev="3m2qrrgwdsk2b")
    new_root, new_blocks = build_repo_blocks(40, CAR_KEY, seed=1, rev="3m2qrrgwdsk3b")
    env = open_env(tmp_path, did=None)
    try:
        import_car(env.db, io.BytesIO(car_bytes([new_root], new_blocks)))
        before = snapshot(env.db)
        with pytest.raises(RepoIOError, match="older than the stored copy"):
            import_car(env.db, io.BytesIO(car_bytes([old_root], old_blocks)))
        assert snapshot(env.db) == before
        import_car(env.db, io.BytesIO(car_bytes([new_root], new_blocks)))  # same rev again: fine
        assert snapshot(env.db)["records"] == 40
    finally:
        env.db.close()


def test_verify_refuses_a_non_canonical_record(tmp_path):
    from tinypds.core.mst import TreeBuilder

    # {"$type": "x.y", "a": 1} with the map keys out of canonical order: hashes fine, not DAG-CBOR
    bad = b"\xa2e$typecx.yaa\x01"
    cid = cid_for_dagcbor(bad)
    nodes = []
    builder = TreeBuilder(lambda c, d: nodes.append((c, d)))
    builder.add("x.y/k1", cid)
    commit = build_commit_from_root(DID, builder.finish(), "3kaaaaaaaaad2", CAR_KEY.sign)
    path = tmp_path / "bad-record.car"
    path.write_bytes(car_bytes([commit[0]], [commit, (cid, bad)] + nodes))
    with pytest.raises(RepoIOError, match="record x.y/k1 is not a valid record: non-canonical"):
        verify_car_file(path, did_key=CAR_DID_KEY, check_records=True)
    assert verify_car_file(path, did_key=CAR_DID_KEY).records == 1  # structure alone is fine
    env = open_env(tmp_path, did=None)
    try:
        import_car(env.db, io.BytesIO(path.read_bytes()))  # import keeps blocks as they are (hash-checked)
        verify_stored(env.db)
        with pytest.raises(RepoIOError, match="not a valid record"):
            verify_stored(env.db, check_records=True)
    finally:
        env.db.close()


# ---- at scale, in small: the generator's realistic repo, round trip and flat memory -----------


@pytest.fixture(scope="module")
def generated_car(tmp_path_factory):
    """A 3,000-record repo from the benchmarks' generator (posts with image/external embeds,
    likes, follows, lists, ...): blob refs, shared record blocks and deep trees included."""
    from tests.bench.gen_repo import write_repo_car

    path = tmp_path_factory.mktemp("gen") / "repo.car"
    info = write_repo_car(path, 3000, CAR_KEY, DID)
    return path, info


def test_generated_repo_round_trip_is_byte_identical(tmp_path, generated_car):
    """export(import(CAR)) == export(import(export(import(CAR)))), the record index and blob
    references of the bulk import equal what the per-record path computes."""
    from tinypds.store import repo as repo_db

    path, info = generated_car
    first = open_env(tmp_path / "a", did=None)
    second = open_env(tmp_path / "b", did=None)
    try:
        with open(path, "rb") as fh:
            res = import_car(first.db, fh, did_key=CAR_DID_KEY)
        assert res.records == 3000 and res.blocks == info["blocks"] and res.unreferenced_blocks == 0
        out = export_bytes(first.db)
        assert len(out) == path.stat().st_size
        import_car(second.db, io.BytesIO(out), did_key=CAR_DID_KEY)
        assert export_bytes(second.db) == out
        verify_stored(second.db, did_key=CAR_DID_KEY)

        def blob_index(conn):
            got = set(conn.execute("SELECT collection, rkey, blob_cid FROM record_blobs"))
            want = set()
            for collection, rkey, data in records_db.iter_record_data(conn):
                want |= {(collection, rkey, bytes(b)) for b in repo_db.blob_refs(data)}
            return got, want
        got, want = second.db.read(blob_index, snapshot=True)
        assert got == want and len(got) > 100
    finally:
        first.db.close()
        second.db.close()


def test_export_memory_stays_flat(tmp_path, generated_car):
    """The export holds one chunk and one tree path, not the repo: traced allocations peak far
    below the CAR's size, and every chunk is at most chunk_size plus one block."""
    import tracemalloc

    path, _ = generated_car
    env = open_env(tmp_path, did=None)
    try:
        with open(path, "rb") as fh:
            import_car(env.db, fh, did_key=CAR_DID_KEY)
        size = path.stat().st_size
        tracemalloc.start()
        try:
            total = 0
            for chunk in iter_export(env.db, chunk_size=16 * 1024):
                assert len(chunk) <= 16 * 1024 + 64 * 1024
                total += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert total == size
        assert peak < size / 4, f"export peaked at {peak:,} traced bytes for a {size:,}-byte repo"
    finally:
        env.db.close()
