"""Lexicon document shape: `validate_lexicon_doc(doc)` checks a parsed lexicon JSON document.

Pure; imports only core.syntax (must not import core.lexicon, which builds on this module).
Owns LexiconDocError and STRING_FORMATS (string format name -> syntax check), shared with the
validator. Tricky bits: which def types are allowed where (primary types only as "main",
params allow only scalar/array fields, subscription messages must be unions).
"""

from __future__ import annotations

from typing import Any

from . import syntax as sx


class LexiconDocError(ValueError):
    """A lexicon document is malformed."""


STRING_FORMATS = {
    "did": sx.is_valid_did,
    "handle": sx.is_valid_handle,
    "at-identifier": sx.is_valid_at_identifier,
    "nsid": sx.is_valid_nsid,
    "at-uri": sx.is_valid_aturi,
    "cid": sx.is_valid_cid_string,
    "datetime": sx.is_valid_datetime,
    "language": sx.is_valid_language,
    "tid": sx.is_valid_tid,
    "record-key": sx.is_valid_rkey,
    "uri": sx.is_valid_uri,
}

_PRIMARY = {"record", "query", "procedure", "subscription", "permission-set"}
_NAMED = _PRIMARY | {"object", "array", "token", "string", "integer", "boolean", "bytes", "cid-link", "blob"}
_FIELD = {"boolean", "integer", "string", "bytes", "cid-link", "blob", "array", "object", "ref", "union", "unknown", "null"}
_PARAM = {"boolean", "integer", "string", "unknown", "array"}


def _is_count(v: Any) -> bool:
    return type(v) is int and v >= 0


def _is_strs(v: Any) -> bool:
    return type(v) is list and all(type(x) is str for x in v)


_LEN = {"minLength": _is_count, "maxLength": _is_count}
_CONSTRAINTS: dict[str, dict[str, Any]] = {
    "string": {
        **_LEN, "maxGraphemes": _is_count, "minGraphemes": _is_count, "format": lambda v: v in STRING_FORMATS,
        "knownValues": _is_strs, "enum": _is_strs, "const": lambda v: type(v) is str, "default": lambda v: type(v) is str,
    },
    "integer": {
        "minimum": lambda v: type(v) is int, "maximum": lambda v: type(v) is int,
        "enum": lambda v: type(v) is list and all(type(x) is int for x in v),
        "const": lambda v: type(v) is int, "default": lambda v: type(v) is int,
    },
    "boolean": {"const": lambda v: type(v) is bool, "default": lambda v: type(v) is bool},
    "bytes": _LEN,
    "array": _LEN,
    "blob": {"accept": _is_strs, "maxSize": _is_count},
    "ref": {"ref": lambda v: type(v) is str and len(v) > 0},
    "union": {"refs": _is_strs, "closed": lambda v: type(v) is bool},
    "object": {"required": _is_strs, "nullable": _is_strs},
    "params": {"required": _is_strs},
    "record": {"key": lambda v: type(v) is str and (v in ("tid", "nsid", "any", "record-key") or v.startswith("literal:"))},
}


def _doc_fail(where: str, msg: str) -> LexiconDocError:
    return LexiconDocError(f"{where}: {msg}")


def _check_def(d: Any, where: str, allowed: set[str]) -> None:
    if type(d) is not dict:
        raise _doc_fail(where, "definition must be an object")
    t = d.get("type")
    if t not in allowed:
        raise _doc_fail(where, f"type {t!r} is not allowed here")
    if "description" in d and type(d["description"]) is not str:
        raise _doc_fail(where, "description must be a string")
    for key, ok in _CONSTRAINTS.get(t, {}).items():
        if key in d and not ok(d[key]):
            raise _doc_fail(where, f"invalid {key!r}")
    if t in ("object", "params"):
        props = d.get("properties")
        if type(props) is not dict:
            raise _doc_fail(where, "properties must be an object")
        for name, prop in props.items():
            _check_def(prop, f"{where}/{name}", _PARAM if t == "params" else _FIELD)
        missing = set(d.get("required", ())) - set(props)
        if missing:
            raise _doc_fail(where, f"required properties are not defined: {sorted(missing)}")
    elif t == "array":
        if "items" not in d:
            raise _doc_fail(where, "array needs items")
        _check_def(d["items"], f"{where}/items", _PARAM - {"array"} if allowed is _PARAM else _FIELD)
    elif t == "ref" and "ref" not in d:
        raise _doc_fail(where, "ref needs a ref")
    elif t == "union" and "refs" not in d:
        raise _doc_fail(where, "union needs refs")
    elif t == "record":
        _check_def(d.get("record"), f"{where}/record", {"object"})
    elif t in ("query", "procedure", "subscription"):
        if "parameters" in d:
            _check_def(d["parameters"], f"{where}/parameters", {"params"})
        for part in ("input", "output") if t != "subscription" else ("message",):
            body = d.get(part)
            if body is None:
                continue
            if type(body) is not dict or (part != "message" and type(body.get("encoding")) is not str):
                raise _doc_fail(f"{where}/{part}", "body needs an encoding")
            if "schema" in body:
                kinds = {"union"} if part == "message" else {"object", "ref", "union"}
                _check_def(body["schema"], f"{where}/{part}/schema", kinds)
        errors = d.get("errors", [])
        if type(errors) is not list or not all(type(e) is dict and type(e.get("name")) is str for e in errors):
            raise _doc_fail(where, "errors must be a list of {name}")
    elif t == "permission-set":
        perms = d.get("permissions")
        if type(perms) is not list or not all(
            type(p) is dict and p.get("type") == "permission" and type(p.get("resource")) is str for p in perms
        ):
            raise _doc_fail(where, "permissions must be a list of permission objects")


def validate_lexicon_doc(doc: Any) -> None:
    """Check the shape of a lexicon document (as parsed from JSON). Raises LexiconDocError."""
    if type(doc) is not dict:
        raise LexiconDocError("lexicon document must be an object")
    if doc.get("lexicon") != 1 or type(doc.get("lexicon")) is not int:
        raise LexiconDocError("lexicon version must be the integer 1")
    nsid = doc.get("id")
    if not sx.is_valid_nsid(nsid):
        raise LexiconDocError(f"id must be an NSID, got {nsid!r}")
    defs = doc.get("defs")
    if type(defs) is not dict or not defs:
        raise LexiconDocError(f"{nsid}: defs must be a non-empty object")
    if "description" in doc and type(doc["description"]) is not str:
        raise LexiconDocError(f"{nsid}: description must be a string")
    for name, d in defs.items():
        if not (type(name) is str and name[:1].isascii() and name[:1].isalpha() and name.replace("_", "").isalnum() and name.isascii()):
            raise LexiconDocError(f"{nsid}: invalid definition name {name!r}")
        _check_def(d, f"{nsid}#{name}", _NAMED if name == "main" else _NAMED - _PRIMARY)
