"""Generic Lexicon validator: `LexiconCatalog` validates data-model values against loaded schemas.

Pure (no I/O); imports only core.syntax, core.cid, core.graphemes and core.lexicon_doc (document
shape checks live there; validate_lexicon_doc, LexiconDocError and count_graphemes are re-exported).
Tricky bits: values are data-model form (CID objects, bytes); maxLength counts UTF-8 bytes,
maxGraphemes grapheme clusters; enum is enforced, knownValues not; refs resolve per document.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from . import syntax as sx
from .cid import CID
from .graphemes import count_graphemes
from .lexicon_doc import STRING_FORMATS, LexiconDocError, validate_lexicon_doc

__all__ = [
    "LexiconCatalog", "LexiconDocError", "LexiconNotFound", "LexiconValidationError",
    "catalog_from_docs", "count_graphemes", "validate_lexicon_doc",
]


class LexiconValidationError(ValueError):
    """A value does not match its schema. `path` names the field, e.g. "Record/embed/images/0"."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.path = path
        self.reason = reason


class LexiconNotFound(LookupError):
    """No schema is loaded for this NSID / ref (callers treat the record type as unknown)."""


# ---------------------------------------------------------------------------
# value validation
# ---------------------------------------------------------------------------



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
        check = STRING_FORMATS.get(fmt)
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
