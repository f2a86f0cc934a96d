"""Day one, checked by Bluesky's REAL AppView (../shared/lab/appview, its own instance on port
2613) indexing two REAL tinypds servers (did:plc at the lab PLC), read back through tinypds's
proxy as the app does: profile with avatar, posts with image and video embeds, a like and a
follow across the two servers, a delete, a handle change, deactivation and reactivation, all
still there after tinypds restarts. Skips with the reason when the PLC or the AppView cannot
start (e.g. no Postgres: `apt-get install -y postgresql`).
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.lab import ensure_appview, stop_appview

from .migration_lab import Account, ensure_plc, free_port, init_tinypds, now_iso, png, start_tinypds, unique_handle

AV_PORT = 2613
POST = "app.bsky.feed.post"


def _mp4(n: int = 64 * 1024) -> bytes:
    head = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    return head + bytes(range(256)) * ((n - len(head)) // 256)


def eventually(fn, what: str, timeout: float = 90.0):
    """Poll `fn` (through the AppView) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (AssertionError, KeyError, httpx.HTTPError) as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"the AppView never showed {what}; last: {last!r}")


class Pds:
    def __init__(self, tmp, prefix: str, plc_url: str):
        self.port = free_port()
        self.data = tmp / prefix
        self.handle = unique_handle(prefix)
        self.did = init_tinypds(self.data, self.port, self.handle)
        self.env = {"TINYPDS_APPVIEW_URL": f"http://localhost:{AV_PORT}",
                    "TINYPDS_APPVIEW_DID": f"did:web:localhost%3A{AV_PORT}", "TINYPDS_RELAYS": ""}
        self.plc_url = plc_url
        self.server = None
        self.acct: Account | None = None

    def start(self) -> None:
        self.server = start_tinypds(self.data, self.port, self.plc_url, env=self.env)
        self.acct = Account(self.server.url, self.handle)

    def stop(self) -> None:
        if self.acct is not None:
            self.acct.close()
            self.acct = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def av(self, nsid: str, **params):
        """An app.bsky read proxied by tinypds to the AppView (as the Bluesky app reads)."""
        r = self.acct.http.get(f"/xrpc/{nsid}", params=params)
        return r


def test_appview_sees_day_one(tmp_path):
    plc_url = ensure_plc()
    a, b = Pds(tmp_path, "alice", plc_url), Pds(tmp_path, "bob", plc_url)
    try:
        a.start()
        b.start()
        ensure_appview(f"ws://localhost:{a.port}", f"ws://localhost:{b.port}", port=AV_PORT)

        # profile with avatar, posts with an image and a video, on A; a post on B
        avatar = a.acct.upload(png(1, 16))
        a.acct.create("app.bsky.actor.profile", {"displayName": "Alice Day One", "avatar": avatar}, rkey="self")
        image = a.acct.upload(png(2, 16))
        with_image = a.acct.create(POST, {"text": "a picture", "createdAt": now_iso(), "embed": {
            "$type": "app.bsky.embed.images", "images": [{"image": image, "alt": "noise"}]}})
        video = a.acct.upload(_mp4(), "video/mp4")
        with_video = a.acct.create(POST, {"text": "a video", "createdAt": now_iso(), "embed": {
            "$type": "app.bsky.embed.video", "video": video, "aspectRatio": {"width": 16, "height": 9}}})
        doomed = a.acct.create(POST, {"text": "to be deleted", "createdAt": now_iso()})
        bobs = b.acct.create(POST, {"text": "hello from bob", "createdAt": now_iso()})
        a.acct.create("app.bsky.graph.follow", {"subject": b.did, "createdAt": now_iso()})
        a.acct.create("app.bsky.feed.like", {"subject": {"uri": bobs["uri"], "cid": bobs["cid"]}, "createdAt": now_iso()})

        def profile():
            r = a.av("app.bsky.actor.getProfile", actor=a.did)
            p = r.json() if r.status_code == 200 else {}
            return p if p.get("displayName") == "Alice Day One" and p.get("avatar") and p.get("postsCount", 0) >= 3 \
                and p.get("followsCount") == 1 else None

        p = eventually(profile, "A's profile with avatar, 3 posts and 1 follow")
        assert p["handle"] == a.handle

        def posts():
            r = a.av("app.bsky.feed.getPosts", uris=[with_image["uri"], with_video["uri"], bobs["uri"]])
            got = {x["uri"]: x for x in r.json().get("posts", [])} if r.status_code == 200 else {}
            return got if len(got) == 3 and got[bobs["uri"]].get("likeCount") == 1 else None

        got = eventually(posts, "the image and video posts and the like on B's post")
        assert got[with_image["uri"]]["embed"]["$type"] == "app.bsky.embed.images#view"
        assert got[with_video["uri"]]["embed"]["$type"] == "app.bsky.embed.video#view"
        assert got[with_video["uri"]]["embed"]["cid"] == video["ref"]["$link"]

        # delete
        r = a.acct.http.post("/xrpc/com.atproto.repo.deleteRecord",
                             json={"repo": a.did, "collection": POST, "rkey": doomed["uri"].rsplit("/", 1)[1]})
        assert r.status_code == 200, r.text
        eventually(lambda: a.av("app.bsky.feed.getPosts", uris=[doomed["uri"]]).json().get("posts") == [],
                   "the deleted post gone")

        # handle change
        new_handle = unique_handle("alice2")
        r = a.acct.http.post("/xrpc/com.atproto.identity.updateHandle", json={"handle": new_handle})
        assert r.status_code == 200, r.text
        a.handle = new_handle
        eventually(lambda: a.av("app.bsky.actor.getProfile", actor=a.did).json().get("handle") == new_handle,
                   "the new handle")

        # deactivation (B reads A's profile through its own tinypds) and back
        r = a.acct.http.post("/xrpc/com.atproto.server.deactivateAccount", json={})
        assert r.status_code == 200, r.text
        eventually(lambda: b.av("app.bsky.actor.getProfile", actor=a.did).json().get("error") == "AccountDeactivated",
                   "A deactivated")
        r = a.acct.http.post("/xrpc/com.atproto.server.activateAccount")
        assert r.status_code == 200, r.text
        eventually(lambda: b.av("app.bsky.actor.getProfile", actor=a.did).status_code == 200, "A active again")

        # a restart of tinypds: everything still there, and new writes still arrive
        a.stop()
        a.start()
        after = a.acct.create(POST, {"text": "after a restart", "createdAt": now_iso()})
        eventually(lambda: len(a.av("app.bsky.feed.getPosts", uris=[after["uri"], with_video["uri"]]).json()
                               .get("posts", [])) == 2, "a post written after the restart")
        assert profile() is not None
    finally:
        a.stop()
        b.stop()
        stop_appview(AV_PORT)  # its own instance: Postgres and node do not linger on a small machine
