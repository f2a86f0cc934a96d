"""A compact way to write lexicon schemas in Python: helpers that build lexicon-shaped dicts.

Pure and dependency-free (imports nothing from tinypds). Only what validation needs is
written: types, required, constraints, refs, unions, formats, record keys; descriptions and
knownValues are left out (knownValues is never enforced). Tricky bit: an object property
whose name ends in "!" is required, e.g. obj({"text!": string(...)}).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def _drop_none(d: Schema) -> Schema:
    return {k: v for k, v in d.items() if v is not None}


def obj(props: dict[str, Schema] | None = None, *, nullable: tuple[str, ...] = ()) -> Schema:
    """An object; keys ending in "!" are required."""
    properties: dict[str, Schema] = {}
    required: list[str] = []
    for key, schema in (props or {}).items():
        name = key.rstrip("!")
        if key.endswith("!"):
            required.append(name)
        properties[name] = schema
    out: Schema = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if nullable:
        out["nullable"] = list(nullable)
    return out


def record(key: str, props: dict[str, Schema]) -> Schema:
    """A record definition; `key` is tid | nsid | any | record-key | literal:<value>."""
    return {"type": "record", "key": key, "record": obj(props)}


def string(fmt: str | None = None, *, max_len: int | None = None, min_len: int | None = None,
           max_g: int | None = None, min_g: int | None = None, const: str | None = None,
           enum: list[str] | None = None) -> Schema:
    return _drop_none({"type": "string", "format": fmt, "maxLength": max_len, "minLength": min_len,
                       "maxGraphemes": max_g, "minGraphemes": min_g, "const": const, "enum": enum})


def integer(minimum: int | None = None, maximum: int | None = None) -> Schema:
    return _drop_none({"type": "integer", "minimum": minimum, "maximum": maximum})


def boolean(const: bool | None = None) -> Schema:
    return _drop_none({"type": "boolean", "const": const})


def array(items: Schema, *, max_len: int | None = None, min_len: int | None = None) -> Schema:
    return _drop_none({"type": "array", "items": items, "maxLength": max_len, "minLength": min_len})


def ref(target: str) -> Schema:
    return {"type": "ref", "ref": target}


def union(*refs: str, closed: bool = False) -> Schema:
    out: Schema = {"type": "union", "refs": list(refs)}
    if closed:
        out["closed"] = True
    return out


def blob(*accept: str, max_size: int | None = None) -> Schema:
    out: Schema = {"type": "blob"}
    if accept:
        out["accept"] = list(accept)
    if max_size is not None:
        out["maxSize"] = max_size
    return out


def token() -> Schema:
    return {"type": "token"}


def unknown() -> Schema:
    return {"type": "unknown"}


# the formats used most, spelled once
DID = string("did")
DATETIME = string("datetime")
AT_URI = string("at-uri")
URI = string("uri")
CID_STR = string("cid")
LANG = string("language")
NSID_STR = string("nsid")
HANDLE = string("handle")
TEXT = string()
STRONG_REF = ref("com.atproto.repo.strongRef")
SELF_LABELS = union("com.atproto.label.defs#selfLabels")
FACETS = array(ref("app.bsky.richtext.facet"))
AVATAR = blob("image/png", "image/jpeg", max_size=1_000_000)


def doc(nsid: str, defs: dict[str, Schema]) -> Schema:
    """A whole lexicon document."""
    return {"lexicon": 1, "id": nsid, "defs": defs}
