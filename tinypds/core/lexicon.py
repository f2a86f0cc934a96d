"""Generic Lexicon validator: check lexicon documents and validate data-model values against them.

Pure (no I/O): callers load JSON docs and hand them to `LexiconCatalog.add` / `catalog_from_docs`.
Imports only core.syntax and core.cid. Values are in data-model form (CID objects for links,
bytes for $bytes, blob refs as dicts whose `ref` is a CID), never raw JSON.
Tricky bits: string maxLength/minLength count UTF-8 bytes, max/minGraphemes count extended
grapheme clusters (a pure approximation of UAX #29, see `count_graphemes`); knownValues is not
enforced, enum is; open unions accept any object that has a `$type`; refs resolve relative to
the document that contains them ("#name" -> "<doc id>#name", bare NSID -> "<nsid>#main").
"""

from __future__ import annotations

import bisect
import unicodedata
from typing import Any, Iterable, Mapping

from . import syntax as sx
from .cid import CID


class LexiconValidationError(ValueError):
    """A value does not match its schema. `path` names the field, e.g. "Record/embed/images/0"."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.path = path
        self.reason = reason


class LexiconNotFound(LookupError):
    """No schema is loaded for this NSID / ref (callers treat the record type as unknown)."""


class LexiconDocError(ValueError):
    """A lexicon document is malformed."""


# ---------------------------------------------------------------------------
# graphemes (approximate UAX #29 extended grapheme clusters, no third-party deps)
# ---------------------------------------------------------------------------

_OTHER, _CR, _LF, _CONTROL, _EXTEND, _ZWJ, _RI, _L, _V, _T, _LV, _LVT, _PICT = range(13)
# Extended_Pictographic, approximated by ranges (start, end inclusive), sorted by start
_PICT_RANGES = (
    (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x203C, 0x203C), (0x2049, 0x2049), (0x2122, 0x2122),
    (0x2139, 0x2139), (0x2194, 0x21AA), (0x231A, 0x23FF), (0x24C2, 0x24C2), (0x25AA, 0x25FE),
    (0x2600, 0x27BF), (0x2934, 0x2935), (0x2B05, 0x2B55), (0x3030, 0x3030), (0x303D, 0x303D),
    (0x3297, 0x3299), (0x1F000, 0x1FAFF), (0x1FC00, 0x1FFFD),
)
_PICT_STARTS = [r[0] for r in _PICT_RANGES]


def _gclass(ch: str) -> int:
    cp = ord(ch)
    if cp == 0x0D:
        return _CR
    if cp == 0x0A:
        return _LF
    if cp == 0x200D:
        return _ZWJ
    if 0x1F1E6 <= cp <= 0x1F1FF:
        return _RI
    if 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F or cp == 0x200C:
        return _EXTEND  # emoji modifiers, tag characters, ZWNJ
    if 0x1100 <= cp <= 0xD7FB:  # Hangul jamo and syllables
        if 0xAC00 <= cp <= 0xD7A3:
            return _LV if (cp - 0xAC00) % 28 == 0 else _LVT
        if cp <= 0x115F or 0xA960 <= cp <= 0xA97C:
            return _L
        if 0x1160 <= cp <= 0x11A7 or 0xD7B0 <= cp <= 0xD7C6:
            return _V
        if 0x11A8 <= cp <= 0x11FF or 0xD7CB <= cp <= 0xD7FB:
            return _T
    cat = unicodedata.category(ch)
    if cat[0] == "M":
        return _EXTEND  # Mn, Me and spacing marks (GB9a)
    if cat in ("Cc", "Zl", "Zp", "Cf"):
        return _CONTROL
    i = bisect.bisect_right(_PICT_STARTS, cp) - 1
    if i >= 0 and cp <= _PICT_RANGES[i][1]:
        return _PICT
    return _OTHER


_GCLASS_CACHE: dict[str, int] = {}  # char -> class; a pure memo, cleared when it grows


def count_graphemes(s: str) -> int:
    """Number of user-perceived characters (extended grapheme clusters), approximately."""
    if s.isascii():
        return len(s) - s.count("\r\n")
    n = 0
    prev = -1
    ri_run = 0  # regional indicators seen in a row
    pict_seq = False  # inside ExtPict Extend* (GB11)
    pict_zwj = False  # ... followed by ZWJ
    cache = _GCLASS_CACHE
    if len(cache) > 4096:
        cache.clear()
    for ch in s:
        c = cache.get(ch)
        if c is None:
            c = cache[ch] = _gclass(ch)
        if c == _OTHER:  # the common case: always starts a new cluster
            n += 1
            ri_run = 0
            pict_seq = pict_zwj = False
            prev = c
            continue
        if prev == -1:
            join = False
        elif prev == _CR and c == _LF:
            join = True
        elif prev in (_CR, _LF, _CONTROL) or c in (_CR, _LF, _CONTROL):
            join = False
        elif prev == _L and c in (_L, _V, _LV, _LVT):
            join = True
        elif prev in (_LV, _V) and c in (_V, _T):
            join = True
        elif prev in (_LVT, _T) and c == _T:
            join = True
        elif c in (_EXTEND, _ZWJ):
            join = True
        elif c == _PICT and pict_zwj:
            join = True
        elif c == _RI and prev == _RI and ri_run % 2 == 1:
            join = True
        else:
            join = False
        if not join:
            n += 1
        ri_run = ri_run + 1 if c == _RI else 0
        pict_zwj = pict_seq and c == _ZWJ
        pict_seq = c == _PICT or (pict_seq and c == _EXTEND)
        prev = c
    return n


# ---------------------------------------------------------------------------
# value validation
# ---------------------------------------------------------------------------

_FORMATS = {
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


def _full_ref(ref: str, ctx: str) -> str:
    if ref.startswith("#"):
        return f"{ctx}{ref}"
    return ref if "#" in ref else f"{ref}#main"


def _mime_accepted(mime: str, accept: list[str]) -> bool:
    for pattern in accept:
        if pattern == "*/*" or pattern == mime:
            return True
        if pattern.endswith("/*") and mime.startswith(pattern[:-1]):
            return True
    return False


def _check_rkey(key_type: str, rkey: str) -> None:
    if key_type == "tid":
        ok, want = sx.is_valid_tid(rkey), "a TID"
    elif key_type == "nsid":
        ok, want = sx.is_valid_nsid(rkey), "an NSID"
    elif key_type.startswith("literal:"):
        ok, want = rkey == key_type[8:], repr(key_type[8:])
    else:  # "any", "record-key"
        ok, want = sx.is_valid_rkey(rkey), "a valid record key"
    if not ok:
        raise LexiconValidationError("Record key", f"must be {want}")


class LexiconCatalog:
    """A set of lexicon documents; validates values against the schemas they define."""

    def __init__(self) -> None:
        self._docs: dict[str, dict] = {}
        self._defs: dict[str, tuple[str, dict]] = {}  # "nsid#name" -> (doc id, def)

    # ---- loading -------------------------------------------------------------
    def add(self, doc: Mapping[str, Any]) -> None:
        """Check a lexicon document and add its definitions. Raises LexiconDocError."""
        validate_lexicon_doc(doc)
        nsid = doc["id"]
        if nsid in self._docs:
            raise LexiconDocError(f"lexicon {nsid} is already loaded")
        self._docs[nsid] = dict(doc)
        for name, d in doc["defs"].items():
            self._defs[f"{nsid}#{name}"] = (nsid, d)

    def __contains__(self, nsid: object) -> bool:
        return nsid in self._docs

    def get_doc(self, nsid: str) -> dict:
        try:
            return self._docs[nsid]
        except KeyError:
            raise LexiconNotFound(nsid) from None

    def get_def(self, ref: str, ctx: str = "") -> dict:
        """The definition for "nsid", "nsid#name" (or "#name" relative to the NSID `ctx`)."""
        return self._lookup(ref, ctx)[1]

    def _lookup(self, ref: str, ctx: str) -> tuple[str, dict]:
        try:
            return self._defs[_full_ref(ref, ctx)]
        except KeyError:
            raise LexiconNotFound(_full_ref(ref, ctx)) from None

    def has_record(self, nsid: str) -> bool:
        d = self._defs.get(f"{nsid}#main")
        return d is not None and d[1].get("type") == "record"

    # ---- entry points ----------------------------------------------------------
    def validate_record(self, nsid: str, value: Any, rkey: str | None = None) -> None:
        """Validate a record of collection `nsid` (and its record key, if given).

        Raises LexiconNotFound if no record schema is loaded for `nsid`, else LexiconValidationError
        whose message reads like "Record/text must not be longer than 300 graphemes".
        """
        if not self.has_record(nsid):
            raise LexiconNotFound(nsid)
        d = self._defs[f"{nsid}#main"][1]
        if type(value) is not dict:
            raise LexiconValidationError("Record", "must be an object")
        if value.get("$type") != nsid:
            raise LexiconValidationError("Record/$type", f"must be {nsid}")
        if rkey is not None:
            _check_rkey(d.get("key", "any"), rkey)
        self._validate(d["record"], value, "Record", nsid)

    def validate(self, ref: str, value: Any, path: str = "Value") -> None:
        """Validate `value` against any named definition (a record def validates its object)."""
        ctx, d = self._lookup(ref, "")
        if d.get("type") == "record":
            d = d["record"]
        self._validate(d, value, path, ctx)

    def validate_params(self, nsid: str, params: Mapping[str, Any]) -> None:
        """Validate already-typed query parameters (ints, bools, strs, lists)."""
        schema = self._method(nsid).get("parameters")
        if schema is not None:
            self._validate_object(schema, dict(params), "Params", nsid)

    def coerce_params(self, nsid: str, raw: Mapping[str, str | list[str]]) -> dict[str, Any]:
        """Turn query-string values into typed params (applying defaults), then validate them."""
        schema = self._method(nsid).get("parameters") or {"properties": {}}
        out: dict[str, Any] = {}
        for name, prop in schema.get("properties", {}).items():
            if name not in raw:
                if "default" in prop:
                    out[name] = prop["default"]
                continue
            vals = raw[name] if isinstance(raw[name], list) else [raw[name]]
            if prop.get("type") == "array":
                out[name] = [_coerce_scalar(prop.get("items", {}), v, f"Params/{name}") for v in vals]
            elif vals:
                out[name] = _coerce_scalar(prop, vals[-1], f"Params/{name}")
        self._validate_object(schema, out, "Params", nsid)
        return out

    def validate_input(self, nsid: str, value: Any) -> None:
        self._validate_body(self._method(nsid).get("input"), value, "Input", nsid)

    def validate_output(self, nsid: str, value: Any) -> None:
        self._validate_body(self._method(nsid).get("output"), value, "Output", nsid)

    def _method(self, nsid: str) -> dict:
        d = self._lookup(nsid, "")[1]
        if d.get("type") not in ("query", "procedure", "subscription"):
            raise LexiconNotFound(f"{nsid} is not an XRPC method")
        return d

    def _validate_body(self, body: dict | None, value: Any, path: str, ctx: str) -> None:
        if body is None or "schema" not in body:
            return
        self._validate(body["schema"], value, path, ctx)

    # ---- the walk ------------------------------------------------------------------
    def _validate(self, schema: dict, value: Any, path: str, ctx: str) -> None:
        t = schema.get("type")
        fail = LexiconValidationError
        if t == "object":
            self._validate_object(schema, value, path, ctx)
        elif t == "string":
            _validate_string(schema, value, path)
        elif t == "integer":
            if type(value) is not int:
                raise fail(path, "must be an integer")
            _check_const_enum(schema, value, path)
            if "minimum" in schema and value < schema["minimum"]:
                raise fail(path, f"can not be less than {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                raise fail(path, f"can not be greater than {schema['maximum']}")
        elif t == "boolean":
            if type(value) is not bool:
                raise fail(path, "must be a boolean")
            _check_const_enum(schema, value, path)
        elif t == "array":
            if type(value) is not list:
                raise fail(path, "must be an array")
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                raise fail(path, f"must not have more than {schema['maxLength']} elements")
            if "minLength" in schema and len(value) < schema["minLength"]:
                raise fail(path, f"must not have fewer than {schema['minLength']} elements")
            items = schema["items"]
            for i, item in enumerate(value):
                self._validate(items, item, f"{path}/{i}", ctx)
        elif t == "ref":
            self._validate_ref(schema["ref"], value, path, ctx)
        elif t == "union":
            self._validate_union(schema, value, path, ctx)
        elif t == "unknown":
            if type(value) is not dict:
                raise fail(path, "must be an object")
            if value.get("$type") == "blob":
                raise fail(path, "must not be a blob")
        elif t == "bytes":
            if type(value) is not bytes:
                raise fail(path, "must be a byte array")
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                raise fail(path, f"must not be larger than {schema['maxLength']} bytes")
            if "minLength" in schema and len(value) < schema["minLength"]:
                raise fail(path, f"must not be smaller than {schema['minLength']} bytes")
        elif t == "cid-link":
            if type(value) is not CID:
                raise fail(path, "must be a CID")
        elif t == "blob":
            _validate_blob(schema, value, path)
        elif t == "null":
            if value is not None:
                raise fail(path, "must be null")
        elif t == "token":
            raise fail(path, "refers to a token, which is not a value")
        else:
            raise fail(path, f"has an unsupported schema type {t!r}")

    def _validate_object(self, schema: dict, value: Any, path: str, ctx: str) -> None:
        if type(value) is not dict:
            raise LexiconValidationError(path, "must be an object")
        nullable = schema.get("nullable", ())
        for key in schema.get("required", ()):
            if key not in value:
                raise LexiconValidationError(path, f'must have the property "{key}"')
        for key, prop in schema.get("properties", {}).items():
            if key not in value:
                continue
            v = value[key]
            if v is None and key in nullable:
                continue
            self._validate(prop, v, f"{path}/{key}", ctx)

    def _validate_ref(self, ref: str, value: Any, path: str, ctx: str) -> None:
        try:
            target_ctx, d = self._lookup(ref, ctx)
        except LexiconNotFound:
            raise LexiconValidationError(path, f"refers to unknown schema {_full_ref(ref, ctx)}") from None
        if d.get("type") == "token":
            if value != _full_ref(ref, ctx).removesuffix("#main"):
                raise LexiconValidationError(path, f"must be {_full_ref(ref, ctx)}")
            return
        self._validate(d, value, path, target_ctx)

    def _validate_union(self, schema: dict, value: Any, path: str, ctx: str) -> None:
        if type(value) is not dict or type(value.get("$type")) is not str:
            raise LexiconValidationError(path, 'must be an object which includes the "$type" property')
        refs = [_full_ref(r, ctx) for r in schema.get("refs", ())]
        typ = _full_ref(value["$type"], "")
        if typ in refs:
            self._validate_ref(typ, value, path, ctx)
        elif schema.get("closed"):
            shown = ", ".join(r.removesuffix("#main") for r in refs)
            raise LexiconValidationError(path, f"$type must be one of {shown}")


def _check_const_enum(schema: dict, value: Any, path: str) -> None:
    if "const" in schema and value != schema["const"]:
        raise LexiconValidationError(path, f"must be {schema['const']}")
    if "enum" in schema and value not in schema["enum"]:
        raise LexiconValidationError(path, f"must be one of ({'|'.join(str(e) for e in schema['enum'])})")


def _validate_string(schema: dict, value: Any, path: str) -> None:
    if type(value) is not str:
        raise LexiconValidationError(path, "must be a string")
    _check_const_enum(schema, value, path)
    n = len(value)  # code points: <= UTF-8 bytes <= 4 * code points; graphemes <= code points
    max_len, min_len = schema.get("maxLength"), schema.get("minLength")
    if (max_len is not None and n * 4 > max_len) or (min_len is not None and n < min_len):
        size = len(value.encode("utf-8", "surrogatepass"))
        if max_len is not None and size > max_len:
            raise LexiconValidationError(path, f"must not be longer than {max_len} characters")
        if min_len is not None and size < min_len:
            raise LexiconValidationError(path, f"must not be shorter than {min_len} characters")
    max_g, min_g = schema.get("maxGraphemes"), schema.get("minGraphemes")
    if (max_g is not None and n > max_g) or (min_g is not None):
        g = count_graphemes(value)
        if max_g is not None and g > max_g:
            raise LexiconValidationError(path, f"must not be longer than {max_g} graphemes")
        if min_g is not None and g < min_g:
            raise LexiconValidationError(path, f"must not be shorter than {min_g} graphemes")
    fmt = schema.get("format")
    if fmt is not None:
        check = _FORMATS.get(fmt)
        if check is not None and not check(value):
            raise LexiconValidationError(path, f"must be a valid {fmt}")


def _validate_blob(schema: dict, value: Any, path: str) -> None:
    if type(value) is not dict:
        raise LexiconValidationError(path, "should be a blob ref")
    mime = value.get("mimeType")
    size = value.get("size")
    if value.get("$type") == "blob":
        if type(value.get("ref")) is not CID or type(mime) is not str or type(size) is not int or size < 0:
            raise LexiconValidationError(path, "should be a blob ref")
    elif set(value) == {"cid", "mimeType"} and sx.is_valid_cid_string(value["cid"]) and type(mime) is str:
        size = None  # legacy blob ref: no size recorded
    else:
        raise LexiconValidationError(path, "should be a blob ref")
    accept = schema.get("accept")
    if accept is not None and not _mime_accepted(mime, accept):
        raise LexiconValidationError(path, f"mimeType {mime} is not accepted ({', '.join(accept)})")
    max_size = schema.get("maxSize")
    if max_size is not None and size is not None and size > max_size:
        raise LexiconValidationError(path, f"is too big: {size} bytes, the maximum is {max_size}")


def _coerce_scalar(schema: dict, raw: str, path: str) -> Any:
    t = schema.get("type")
    if t == "integer":
        try:
            return int(raw, 10)
        except ValueError:
            raise LexiconValidationError(path, "must be an integer") from None
    if t == "boolean":
        if raw in ("true", "false"):
            return raw == "true"
        raise LexiconValidationError(path, "must be a boolean")
    return raw


def catalog_from_docs(docs: Iterable[Mapping[str, Any]]) -> LexiconCatalog:
    """A catalog holding every document of `docs` (each already parsed from JSON)."""
    cat = LexiconCatalog()
    for doc in docs:
        cat.add(doc)
    return cat



# ---------------------------------------------------------------------------
# lexicon document shape
# ---------------------------------------------------------------------------

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
        **_LEN, "maxGraphemes": _is_count, "minGraphemes": _is_count, "format": lambda v: v in _FORMATS,
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
