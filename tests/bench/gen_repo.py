"""Generate realistic atproto repos (records and whole signed CAR files) for tests and benchmarks.

Records look like what the Bluesky app writes: posts with facets, images/external/quote
embeds and replies (blob refs, strongRefs), likes/reposts with strongRefs, follows, blocks,
lists, a profile, and some non-bsky collections. Deterministic for a seed. Keys are produced
in MST order, so a CAR of any size streams out with memory flat in the repo size:
`write_repo_car(path, n, key, did)`. Usable as a script: `python tests/bench/gen_repo.py N OUT.car`.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tinypds.core import car, dagcbor  # noqa: E402
from tinypds.core.cid import CID, cid_for_dagcbor  # noqa: E402
from tinypds.core.mst import TreeBuilder  # noqa: E402
from tinypds.core.tid import tid_from_parts  # noqa: E402

# (collection, share of records) — sorted by "collection/" so keys come out in MST order
MIX = {
    "app.bsky.feed.like": 0.40,
    "app.bsky.feed.post": 0.22,
    "app.bsky.graph.follow": 0.14,
    "app.bsky.feed.repost": 0.12,
    "app.bsky.graph.block": 0.02,
    "app.bsky.graph.listitem": 0.03,
    "app.bsky.graph.list": 0.005,
    "app.bsky.feed.threadgate": 0.01,
    "com.whtwnd.blog.entry": 0.01,
    "fyi.unravel.frontpage.post": 0.01,
    "sh.tangled.repo": 0.005,
    "blue.linkat.board": 0.0,  # exactly one (below)
    "app.bsky.actor.profile": 0.0,  # exactly one: "self"
    "chat.bsky.actor.declaration": 0.0,  # exactly one: "self"
}
SINGLETONS = {"app.bsky.actor.profile": "self", "chat.bsky.actor.declaration": "self", "blue.linkat.board": "self"}

WORDS = (
    "the a of to and in is it you that he was for on are with as his they be at one have this from "
    "atproto bluesky repo sqlite firehose relay merkle tree search commit signature python sync "
    "weekend coffee sunrise garden music photo river cat dog train book city mountain lake"
).split()


def _fake_cid(rng: random.Random, codec: int = 0x71) -> CID:
    return CID(bytes([1, codec, 0x12, 0x20]) + rng.randbytes(32))


def _did(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "did:plc:" + "".join(rng.choice(alphabet) for _ in range(24))


def _datetime(us: int) -> str:
    s, micro = divmod(us, 1_000_000)
    import datetime as _dt

    t = _dt.datetime.fromtimestamp(s, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{micro // 1000:03d}Z"


def _blob(rng: random.Random, mime: str = "image/jpeg") -> dict:
    return {"$type": "blob", "ref": _fake_cid(rng, 0x55), "mimeType": mime, "size": rng.randrange(20_000, 900_000)}


def _strong_ref(rng: random.Random, collection: str = "app.bsky.feed.post") -> dict:
    tid = tid_from_parts(rng.randrange(1_600_000_000_000_000, 1_750_000_000_000_000), rng.randrange(1024))
    return {"uri": f"at://{_did(rng)}/{collection}/{tid}", "cid": _fake_cid(rng)}


def _text(rng: random.Random, lo: int = 3, hi: int = 40) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(lo, hi)))


def _post(rng: random.Random, created: str) -> dict:
    text = _text(rng)
    rec: dict[str, Any] = {"$type": "app.bsky.feed.post", "text": text, "createdAt": created, "langs": ["en"]}
    r = rng.random()
    if r < 0.35:  # facets: a mention, a link or a tag over the first word
        end = len(text.split(" ")[0].encode())
        kind = rng.choice(["mention", "link", "tag"])
        feature: dict[str, Any] = {"$type": f"app.bsky.richtext.facet#{kind}"}
        if kind == "mention":
            feature["did"] = _did(rng)
        elif kind == "link":
            feature["uri"] = "https://example.com/" + rng.choice(WORDS)
        else:
            feature["tag"] = rng.choice(WORDS)
        rec["facets"] = [{"index": {"byteStart": 0, "byteEnd": end}, "features": [feature]}]
    e = rng.random()
    if e < 0.20:
        rec["embed"] = {
            "$type": "app.bsky.embed.images",
            "images": [
                {"alt": _text(rng, 0, 8), "image": _blob(rng), "aspectRatio": {"width": 1200, "height": rng.choice([800, 900, 1600])}}
                for _ in range(rng.randrange(1, 5))
            ],
        }
    elif e < 0.30:
        rec["embed"] = {
            "$type": "app.bsky.embed.external",
            "external": {"uri": "https://example.org/" + rng.choice(WORDS), "title": _text(rng, 2, 8),
                         "description": _text(rng, 5, 20), "thumb": _blob(rng)},
        }
    elif e < 0.36:
        rec["embed"] = {"$type": "app.bsky.embed.record", "record": _strong_ref(rng)}
    if rng.random() < 0.3:
        root = _strong_ref(rng)
        rec["reply"] = {"root": root, "parent": _strong_ref(rng) if rng.random() < 0.5 else root}
    return rec


def make_record(collection: str, rng: random.Random, created: str, rkey: str) -> dict:
    """One realistic record of `collection`."""
    if collection == "app.bsky.feed.post":
        return _post(rng, created)
    if collection in ("app.bsky.feed.like", "app.bsky.feed.repost"):
        return {"$type": collection, "subject": _strong_ref(rng), "createdAt": created}
    if collection in ("app.bsky.graph.follow", "app.bsky.graph.block"):
        return {"$type": collection, "subject": _did(rng), "createdAt": created}
    if collection == "app.bsky.graph.list":
        return {"$type": collection, "name": _text(rng, 1, 4), "purpose": "app.bsky.graph.defs#curatelist",
                "description": _text(rng, 3, 12), "createdAt": created}
    if collection == "app.bsky.graph.listitem":
        return {"$type": collection, "subject": _did(rng), "list": _strong_ref(rng, "app.bsky.graph.list")["uri"], "createdAt": created}
    if collection == "app.bsky.feed.threadgate":
        return {"$type": collection, "post": f"at://did:plc:self/app.bsky.feed.post/{rkey}",
                "allow": [{"$type": "app.bsky.feed.threadgate#mentionRule"}], "createdAt": created}
    if collection == "app.bsky.actor.profile":
        return {"$type": collection, "displayName": "Bench Mark", "description": _text(rng, 5, 30),
                "avatar": _blob(rng), "banner": _blob(rng), "createdAt": created}
    if collection == "chat.bsky.actor.declaration":
        return {"$type": collection, "allowIncoming": "following"}
    if collection == "com.whtwnd.blog.entry":
        return {"$type": collection, "title": _text(rng, 2, 8), "content": _text(rng, 80, 400),
                "createdAt": created, "visibility": "public"}
    if collection == "fyi.unravel.frontpage.post":
        return {"$type": collection, "title": _text(rng, 3, 10), "url": "https://example.net/" + rng.choice(WORDS), "createdAt": created}
    if collection == "sh.tangled.repo":
        return {"$type": collection, "name": rng.choice(WORDS) + "-" + rng.choice(WORDS), "knot": "knot.example.com",
                "createdAt": created}
    if collection == "blue.linkat.board":
        return {"$type": collection, "cards": [{"url": "https://example.com/" + w, "text": w} for w in WORDS[:5]]}
    return {"$type": collection, "createdAt": created, "note": _text(rng)}


def counts(n: int) -> dict[str, int]:
    """How many records of each collection a repo of n records gets (sums to n)."""
    out = {c: 1 for c in SINGLETONS}
    rest = n - len(out)
    weighted = [c for c, w in MIX.items() if w > 0]
    total_w = sum(MIX[c] for c in weighted)
    for c in weighted:
        out[c] = int(rest * MIX[c] / total_w)
    out["app.bsky.feed.like"] += n - sum(out.values())
    return out


def generate_records(n: int, seed: int = 0) -> Iterator[tuple[str, str, dict]]:
    """(collection, rkey, record) for n records, in MST key order ("collection/rkey" bytewise)."""
    rng = random.Random(seed)
    plan = counts(n)
    start_us = 1_700_000_000_000_000
    for collection in sorted(plan, key=lambda c: (c + "/").encode()):
        k = plan[collection]
        if collection in SINGLETONS:
            yield collection, SINGLETONS[collection], make_record(collection, rng, _datetime(start_us), "self")
            continue
        us = start_us
        clock_id = rng.randrange(1024)
        for _ in range(k):
            us += rng.randrange(1, 4_000_000_000)
            rkey = tid_from_parts(us, clock_id)
            yield collection, rkey, make_record(collection, rng, _datetime(us), rkey)


def write_repo_car(path: str | os.PathLike, n: int, key: Any, did: str, seed: int = 0, rev: str | None = None) -> dict:
    """Write a signed repo CAR of n generated records (commit first, then records and nodes).

    Streams through a temporary file, so memory stays flat. Returns a summary dict with the
    commit CID, data (MST root) CID, rev, and counts.
    """
    from tinypds.core.commit import build_commit_from_root

    path = Path(path)
    tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=".gen-", delete=False)
    nblocks = 0
    try:
        with tmp:
            def put(cid: CID, data: bytes) -> None:
                nonlocal nblocks
                tmp.write(car.encode_block(cid, data))
                nblocks += 1

            builder = TreeBuilder(put)
            seen: set[CID] = set()
            for collection, rkey, rec in generate_records(n, seed):
                data = dagcbor.encode(rec)
                cid = cid_for_dagcbor(data)
                if cid not in seen:  # identical records share one block
                    put(cid, data)
                    if len(seen) < 100_000:
                        seen.add(cid)
                builder.add(f"{collection}/{rkey}", cid)
            root = builder.finish()
        rev = rev or tid_from_parts(1_760_000_000_000_000 + n, 7)
        commit_cid, commit_block = build_commit_from_root(did, root, rev, key.sign)
        with open(path, "wb") as out, open(tmp.name, "rb") as blocks:
            out.write(car.encode_header([commit_cid]))
            out.write(car.encode_block(commit_cid, commit_block))
            while chunk := blocks.read(1 << 20):
                out.write(chunk)
    finally:
        os.unlink(tmp.name)
    return {"commit": commit_cid, "data": root, "rev": rev, "records": n, "blocks": nblocks + 1,
            "bytes": path.stat().st_size}


def main(argv: list[str]) -> int:
    from tinypds.core.crypto import K256PrivateKey, format_did_key

    if len(argv) < 2:
        print("usage: gen_repo.py N OUT.car [SEED]", file=sys.stderr)
        return 2
    n, out = int(argv[0]), argv[1]
    seed = int(argv[2]) if len(argv) > 2 else 0
    key = K256PrivateKey.from_bytes(hashlib.sha256(f"bench-key-{seed}".encode()).digest())
    did = "did:plc:benchbenchbenchbenchbenc"
    info = write_repo_car(out, n, key, did, seed)
    print(f"wrote {out}: {info['records']} records, {info['blocks']} blocks, {info['bytes']:,} bytes, "
          f"commit {info['commit']}, signed by {format_did_key(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
