"""Scope grammar and checks (atproto.com/specs/permission): what each grant allows, and what not."""

from __future__ import annotations

import pytest

from tinypds.services.auth.context import AuthContext
from tinypds.services.auth.oauth.scopes import (AccountAccess, BlobUpload, IdentityChange, RepoWrite, RpcCall, ScopeError, ScopeMissingError, describe, parse_permission, parse_scope, scope_allows)

APPVIEW = "did:web:api.bsky.app#bsky_appview"
CHAT = "did:web:api.bsky.chat#bsky_chat"


@pytest.mark.parametrize("scopes, action, allowed", [
    ({"atproto"}, RepoWrite("app.bsky.feed.post", "create"), False),
    ({"atproto", "repo:app.bsky.feed.post"}, RepoWrite("app.bsky.feed.post", "create"), True),
    ({"atproto", "repo:app.bsky.feed.like"}, RepoWrite("app.bsky.feed.post", "create"), False),
    ({"atproto", "repo:app.bsky.feed.post?action=create"}, RepoWrite("app.bsky.feed.post", "delete"), False),
    ({"atproto", "repo?collection=app.bsky.feed.post&collection=app.bsky.feed.like&action=delete"}, RepoWrite("app.bsky.feed.like", "delete"), True),
    ({"atproto", "repo:*"}, RepoWrite("com.example.thing", "update"), True),
    ({"atproto", "transition:generic"}, RepoWrite("app.bsky.feed.post", "create"), True),
    ({"atproto", "blob:image/*"}, BlobUpload("image/png"), True),
    ({"atproto", "blob:image/*"}, BlobUpload("video/mp4"), False),
    ({"atproto", "blob?accept=video/mp4&accept=image/png"}, BlobUpload("video/mp4"), True),
    ({"atproto", "transition:generic"}, BlobUpload("video/mp4"), True),
    ({"atproto", f"rpc:app.bsky.feed.getTimeline?aud={APPVIEW}"}, RpcCall("app.bsky.feed.getTimeline", APPVIEW), True),
    ({"atproto", f"rpc:app.bsky.feed.getTimeline?aud={APPVIEW}"}, RpcCall("app.bsky.feed.getTimeline", "did:web:evil.example#x"), False),
    ({"atproto", "rpc:app.bsky.feed.getTimeline?aud=did:web:api.bsky.app%23bsky_appview"}, RpcCall("app.bsky.feed.getTimeline", APPVIEW), True),
    ({"atproto", f"rpc:app.bsky.feed.getTimeline?aud={APPVIEW}"}, RpcCall("app.bsky.feed.getTimeline", "did:web:api.bsky.app"), True),
    ({"atproto", f"rpc:app.bsky.feed.getTimeline?aud={APPVIEW}"}, RpcCall("app.bsky.feed.getTimeline", "did:web:api.bsky.app#other"), False),
    ({"atproto", "rpc:app.bsky.feed.getTimeline?aud=*"}, RpcCall("app.bsky.feed.getTimeline", "did:web:x.example#y"), True),
    ({"atproto", "transition:generic"}, RpcCall("app.bsky.feed.getTimeline", APPVIEW), True),
    ({"atproto", "transition:generic"}, RpcCall("chat.bsky.convo.listConvos", CHAT), False),
    ({"atproto", "transition:generic", "transition:chat.bsky"}, RpcCall("chat.bsky.convo.listConvos", CHAT), True),
    ({"atproto", "transition:generic"}, AccountAccess("email"), False),
    ({"atproto", "transition:email"}, AccountAccess("email"), True),
    ({"atproto", "account:email"}, AccountAccess("email", "manage"), False),
    ({"atproto", "account:email?action=manage"}, AccountAccess("email", "manage"), True),
    ({"atproto", "transition:generic"}, IdentityChange("handle"), False),
    ({"atproto", "identity:handle"}, IdentityChange("handle"), True),
    ({"atproto", "identity:handle"}, IdentityChange("*"), False),
    ({"atproto", "identity:*"}, IdentityChange("handle"), True),
])
def test_scope_allows(scopes, action, allowed):
    assert scope_allows(scopes, action) is allowed


@pytest.mark.parametrize("token", [
    "repo", "repo:not an nsid", "repo:app.bsky.feed.post?action=destroy", "rpc:app.bsky.feed.getTimeline",
    "rpc:*?aud=*", "blob:image", "account:password", "identity:did", "frobnicate:x", "repo:app.bsky.feed.post?bogus=1",
    "account:email?action=read&action=manage",
])
def test_malformed_scopes_are_refused(token):
    with pytest.raises(ScopeError):
        parse_permission(token)


def test_parse_scope_requires_atproto_and_refuses_permission_sets():
    assert parse_scope("atproto transition:generic atproto") == ("atproto", "transition:generic")
    with pytest.raises(ScopeError, match="atproto"):
        parse_scope("transition:generic")
    with pytest.raises(ScopeError, match="cannot be resolved"):
        parse_scope("atproto include:app.bsky.authFullApp")


def test_auth_context_require_only_limits_oauth():
    oauth = AuthContext(did="did:plc:x", kind="oauth", scopes=frozenset({"atproto", "repo:app.bsky.feed.like"}))
    oauth.require(RepoWrite("app.bsky.feed.like", "create"))
    with pytest.raises(ScopeMissingError) as e:
        oauth.require(RepoWrite("app.bsky.feed.post", "create"))
    assert e.value.status == 403 and "repo:app.bsky.feed.post?action=create" in e.value.message
    AuthContext(did="did:plc:x", kind="access", scopes=frozenset({"com.atproto.access"})).require(RepoWrite("app.bsky.feed.post", "create"))


def test_describe_in_words():
    lines = describe(["atproto", "repo:app.bsky.feed.post?action=create", "blob:image/*", "transition:email"])
    assert lines[0].startswith("Know your account")
    assert "Create records in app.bsky.feed.post" in lines
    assert any("image/*" in line for line in lines) and any("email" in line for line in lines)
