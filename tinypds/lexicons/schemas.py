"""The record schemas this PDS validates: app.bsky.* records, chat.bsky.actor.declaration and
the definitions they reference, written in the project's own compact form (see dsl.py).

Pure data; imports only .dsl. tests/services/test_records_lexicons.py compares every
definition here with the published lexicons (../shared/lexicons) so drift is caught.
Tricky bits: view definitions (app views) are not needed to validate records and are left
out; a union lists refs exactly as the published schema spells them (relative "#x" or NSID).
"""

from __future__ import annotations

from .dsl import (
    AT_URI, AVATAR, CID_STR, DATETIME, DID, FACETS, HANDLE, LANG, NSID_STR, SELF_LABELS,
    STRONG_REF, TEXT, URI, Schema, array, blob, boolean, doc, integer, obj, record, ref,
    string, token, union,
)

_ASPECT = ref("app.bsky.embed.defs#aspectRatio")
_POST_EMBEDS = ("app.bsky.embed.images", "app.bsky.embed.video", "app.bsky.embed.gallery",
                "app.bsky.embed.external", "app.bsky.embed.record", "app.bsky.embed.recordWithMedia")
_MEDIA_EMBEDS = ("app.bsky.embed.images", "app.bsky.embed.video", "app.bsky.embed.gallery",
                 "app.bsky.embed.external")

DEFS: dict[str, dict[str, Schema]] = {
    # ---- com.atproto ------------------------------------------------------------------
    "com.atproto.repo.strongRef": {
        "main": obj({"uri!": AT_URI, "cid!": CID_STR}),
    },
    "com.atproto.label.defs": {
        "selfLabels": obj({"values!": array(ref("#selfLabel"), max_len=10)}),
        "selfLabel": obj({"val!": string(max_len=128)}),
        "labelValue": string(),
        "labelValueDefinition": obj({
            "identifier!": string(max_len=100, max_g=100),
            "severity!": TEXT,
            "blurs!": TEXT,
            "defaultSetting": TEXT,
            "adultOnly": boolean(),
            "locales!": array(ref("#labelValueDefinitionStrings")),
        }),
        "labelValueDefinitionStrings": obj({
            "lang!": LANG,
            "name!": string(max_len=640, max_g=64),
            "description!": string(max_len=100_000, max_g=10_000),
        }),
    },
    "com.atproto.moderation.defs": {
        "reasonType": string(),
        "subjectType": string(),
    },
    # ---- app.bsky.actor -----------------------------------------------------------------
    "app.bsky.actor.profile": {
        "main": record("literal:self", {
            "displayName": string(max_len=640, max_g=64),
            "description": string(max_len=2560, max_g=256),
            "pronouns": string(max_len=200, max_g=20),
            "website": URI,
            "avatar": AVATAR,
            "banner": AVATAR,
            "labels": SELF_LABELS,
            "joinedViaStarterPack": STRONG_REF,
            "pinnedPost": STRONG_REF,
            "createdAt": DATETIME,
        }),
    },
    "app.bsky.actor.status": {
        "main": record("literal:self", {
            "status!": TEXT,
            "embed": union("app.bsky.embed.external"),
            "durationMinutes": integer(minimum=1),
            "createdAt!": DATETIME,
        }),
        "live": token(),
    },
    # ---- app.bsky.embed -----------------------------------------------------------------
    "app.bsky.embed.defs": {
        "aspectRatio": obj({"width!": integer(minimum=1), "height!": integer(minimum=1)}),
    },
    "app.bsky.embed.external": {
        "main": obj({"external!": ref("#external")}),
        "external": obj({
            "uri!": URI,
            "title!": TEXT,
            "description!": TEXT,
            "thumb": blob("image/*", max_size=1_000_000),
            "associatedRefs": array(STRONG_REF),
        }),
    },
    "app.bsky.embed.images": {
        "main": obj({"images!": array(ref("#image"), max_len=4)}),
        "image": obj({
            "image!": blob("image/*", max_size=2_000_000),
            "alt!": TEXT,
            "aspectRatio": _ASPECT,
        }),
    },
    "app.bsky.embed.gallery": {
        "main": obj({"items!": array(union("#image"), max_len=20)}),
        "image": obj({
            "image!": blob("image/*", max_size=2_000_000),
            "alt!": TEXT,
            "aspectRatio!": _ASPECT,
        }),
    },
    "app.bsky.embed.video": {
        "main": obj({
            "video!": blob("video/mp4", max_size=300_000_000),
            "captions": array(ref("#caption"), max_len=20),
            "alt": TEXT,
            "aspectRatio": _ASPECT,
            "presentation": TEXT,
        }),
        "caption": obj({"lang!": LANG, "file!": blob("text/vtt", max_size=20_000)}),
    },
    "app.bsky.embed.record": {
        "main": obj({"record!": STRONG_REF}),
    },
    "app.bsky.embed.recordWithMedia": {
        "main": obj({"record!": ref("app.bsky.embed.record"), "media!": union(*_MEDIA_EMBEDS)}),
    },
    # ---- app.bsky.richtext --------------------------------------------------------------
    "app.bsky.richtext.facet": {
        "main": obj({"index!": ref("#byteSlice"), "features!": array(union("#mention", "#link", "#tag"))}),
        "mention": obj({"did!": DID}),
        "link": obj({"uri!": URI}),
        "tag": obj({"tag!": string(max_len=640, max_g=64)}),
        "byteSlice": obj({"byteStart!": integer(minimum=0), "byteEnd!": integer(minimum=0)}),
    },
    # ---- app.bsky.feed ------------------------------------------------------------------
    "app.bsky.feed.post": {
        "main": record("tid", {
            "text!": string(max_len=3000, max_g=300),
            "entities": array(ref("#entity")),
            "facets": FACETS,
            "reply": ref("#replyRef"),
            "embed": union(*_POST_EMBEDS),
            "langs": array(LANG, max_len=3),
            "labels": SELF_LABELS,
            "tags": array(string(max_len=640, max_g=64), max_len=8),
            "createdAt!": DATETIME,
        }),
        "replyRef": obj({"root!": STRONG_REF, "parent!": STRONG_REF}),
        "entity": obj({"index!": ref("#textSlice"), "type!": TEXT, "value!": TEXT}),
        "textSlice": obj({"start!": integer(minimum=0), "end!": integer(minimum=0)}),
    },
    "app.bsky.feed.like": {
        "main": record("tid", {"subject!": STRONG_REF, "createdAt!": DATETIME, "via": STRONG_REF}),
    },
    "app.bsky.feed.repost": {
        "main": record("tid", {"subject!": STRONG_REF, "createdAt!": DATETIME, "via": STRONG_REF}),
    },
    "app.bsky.feed.threadgate": {
        "main": record("tid", {
            "post!": AT_URI,
            "allow": array(union("#mentionRule", "#followerRule", "#followingRule", "#listRule"), max_len=5),
            "createdAt!": DATETIME,
            "hiddenReplies": array(AT_URI, max_len=300),
        }),
        "mentionRule": obj(),
        "followerRule": obj(),
        "followingRule": obj(),
        "listRule": obj({"list!": AT_URI}),
    },
    "app.bsky.feed.postgate": {
        "main": record("tid", {
            "createdAt!": DATETIME,
            "post!": AT_URI,
            "detachedEmbeddingUris": array(AT_URI, max_len=50),
            "embeddingRules": array(union("#disableRule"), max_len=5),
        }),
        "disableRule": obj(),
    },
    "app.bsky.feed.generator": {
        "main": record("any", {
            "did!": DID,
            "displayName!": string(max_len=240, max_g=24),
            "description": string(max_len=3000, max_g=300),
            "descriptionFacets": FACETS,
            "avatar": AVATAR,
            "acceptsInteractions": boolean(),
            "labels": SELF_LABELS,
            "contentMode": TEXT,
            "createdAt!": DATETIME,
        }),
    },
    # ---- app.bsky.graph -----------------------------------------------------------------
    "app.bsky.graph.defs": {
        "listPurpose": string(),
        "modlist": token(),
        "curatelist": token(),
        "referencelist": token(),
    },
    "app.bsky.graph.follow": {
        "main": record("tid", {"subject!": DID, "createdAt!": DATETIME, "via": STRONG_REF}),
    },
    "app.bsky.graph.block": {
        "main": record("tid", {"subject!": DID, "createdAt!": DATETIME}),
    },
    "app.bsky.graph.list": {
        "main": record("tid", {
            "purpose!": ref("app.bsky.graph.defs#listPurpose"),
            "name!": string(max_len=64, min_len=1),
            "description": string(max_len=3000, max_g=300),
            "descriptionFacets": FACETS,
            "avatar": AVATAR,
            "labels": SELF_LABELS,
            "createdAt!": DATETIME,
        }),
    },
    "app.bsky.graph.listitem": {
        "main": record("tid", {"subject!": DID, "list!": AT_URI, "createdAt!": DATETIME}),
    },
    "app.bsky.graph.listblock": {
        "main": record("tid", {"subject!": AT_URI, "createdAt!": DATETIME}),
    },
    "app.bsky.graph.starterpack": {
        "main": record("tid", {
            "name!": string(max_len=500, min_len=1, max_g=50),
            "description": string(max_len=3000, max_g=300),
            "descriptionFacets": FACETS,
            "list!": AT_URI,
            "feeds": array(ref("#feedItem"), max_len=3),
            "createdAt!": DATETIME,
        }),
        "feedItem": obj({"uri!": AT_URI}),
    },
    "app.bsky.graph.verification": {
        "main": record("tid", {"subject!": DID, "handle!": HANDLE, "displayName!": TEXT, "createdAt!": DATETIME}),
    },
    # ---- app.bsky.labeler / notification ------------------------------------------------------
    "app.bsky.labeler.defs": {
        "labelerPolicies": obj({
            "labelValues!": array(ref("com.atproto.label.defs#labelValue")),
            "labelValueDefinitions": array(ref("com.atproto.label.defs#labelValueDefinition")),
        }),
    },
    "app.bsky.labeler.service": {
        "main": record("literal:self", {
            "policies!": ref("app.bsky.labeler.defs#labelerPolicies"),
            "labels": SELF_LABELS,
            "createdAt!": DATETIME,
            "reasonTypes": array(ref("com.atproto.moderation.defs#reasonType")),
            "subjectTypes": array(ref("com.atproto.moderation.defs#subjectType")),
            "subjectCollections": array(NSID_STR),
        }),
    },
    "app.bsky.notification.declaration": {
        "main": record("literal:self", {"allowSubscriptions!": TEXT}),
    },
    "app.bsky.actor.contentVisibilityDeclaration": {
        "main": record("literal:self", {"hideFromAlgorithmicRecommendations!": boolean()}),
    },
    # ---- chat.bsky ----------------------------------------------------------------------
    "chat.bsky.actor.declaration": {
        "main": record("literal:self", {"allowIncoming!": TEXT, "allowGroupInvites": TEXT}),
    },
}


def documents() -> list[Schema]:
    """Every schema as a lexicon document, ready for LexiconCatalog.add."""
    return [doc(nsid, defs) for nsid, defs in DEFS.items()]
