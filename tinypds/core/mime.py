"""MIME type of an uploaded blob, sniffed from its first bytes (pure).

Owns `sniff(head)` and `choose_mime(head, declared)`; imports nothing outside the
stdlib. Tricky bits: the sniffed type always wins over the client's Content-Type;
a declared type is kept only when nothing was recognised and it is a safe media
type (never anything scriptable: SVG, HTML, XML, JavaScript are served as
application/octet-stream). Give `sniff` at least SNIFF_BYTES bytes when available.
"""

from __future__ import annotations

OCTET_STREAM = "application/octet-stream"
SNIFF_BYTES = 512  # enough for every signature below (EBML doctype, ftyp brands)

# ISO base media file format (ftyp box) major/compatible brands -> type
_FTYP_BRANDS = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"heim": "image/heic",
    b"heis": "image/heic",
    b"hevc": "image/heic-sequence",
    b"hevx": "image/heic-sequence",
    b"mif1": "image/heif",
    b"msf1": "image/heif-sequence",
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4",
    b"M4B ": "audio/mp4",
    b"3gp4": "video/3gpp",
    b"3gp5": "video/3gpp",
    b"3gp6": "video/3gpp",
    b"3g2a": "video/3gpp2",
}
_MP4_BRANDS = {b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"dash", b"M4V ", b"MSNV", b"f4v "}

# Declared types we keep when sniffing found nothing (media only; nothing a browser runs).
_SAFE_PREFIXES = ("image/", "video/", "audio/")
_UNSAFE_MARKERS = ("svg", "xml", "html", "javascript", "ecmascript", "xhtml")
_SAFE_EXACT = {"application/pdf", "text/plain", OCTET_STREAM}


def _sniff_ftyp(head: bytes) -> str | None:
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    box_len = int.from_bytes(head[0:4], "big")
    major = head[8:12]
    if major in _FTYP_BRANDS:
        return _FTYP_BRANDS[major]
    if major in _MP4_BRANDS:
        return "video/mp4"
    # look at the compatible brands (after the 4-byte minor version)
    end = min(len(head), box_len if 16 <= box_len <= 4096 else 64)
    for pos in range(16, end - 3, 4):
        brand = head[pos : pos + 4]
        if brand in _FTYP_BRANDS:
            return _FTYP_BRANDS[brand]
    for pos in range(16, end - 3, 4):
        if head[pos : pos + 4] in _MP4_BRANDS:
            return "video/mp4"
    return "video/mp4"  # an unknown ISO-BMFF brand is still an MP4 container


def _sniff_ebml(head: bytes) -> str | None:
    if not head.startswith(b"\x1a\x45\xdf\xa3"):
        return None
    # DocType element id 0x4282, followed by a size vint and the string
    idx = head.find(b"\x42\x82", 4, 64)
    if idx >= 0 and head[idx + 3 : idx + 7] == b"webm":
        return "video/webm"
    return "video/x-matroska"


def _sniff_mpeg_audio(head: bytes) -> str | None:
    if head.startswith(b"ID3") and len(head) >= 10:
        return "audio/mpeg"
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    layer = (head[1] >> 1) & 0x3
    if layer == 0:
        # ADTS AAC: sync 0xFFF, layer 00
        return "audio/aac" if head[1] & 0xF0 == 0xF0 else None
    version = (head[1] >> 3) & 0x3
    bitrate = head[2] >> 4
    sample_rate = (head[2] >> 2) & 0x3
    if version == 1 or bitrate in (0, 0xF) or sample_rate == 3:
        return None
    return "audio/mpeg"


def sniff(head: bytes) -> str | None:
    """Recognised MIME type of content starting with `head`, or None."""
    head = bytes(head[:SNIFF_BYTES])
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and len(head) >= 12:
        kind = head[8:12]
        if kind == b"WEBP":
            return "image/webp"
        if kind == b"WAVE":
            return "audio/wav"
        if kind == b"AVI ":
            return "video/x-msvideo"
        return None
    found = _sniff_ftyp(head) or _sniff_ebml(head)
    if found:
        return found
    if head.startswith(b"OggS"):
        return "video/ogg" if b"\x80theora" in head[:128] else "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    return _sniff_mpeg_audio(head)


def normalize_declared(declared: str | None) -> str | None:
    """Lower-cased `type/subtype` of a Content-Type header value, or None if malformed."""
    if not declared:
        return None
    value = declared.split(";", 1)[0].strip().lower()
    kind, sep, sub = value.partition("/")
    if not sep or not kind or not sub or not value.isascii() or any(c.isspace() for c in value):
        return None
    return value


def is_safe_declared(mime: str) -> bool:
    """True for media types a browser will not execute (images, audio, video, pdf, text)."""
    if any(marker in mime for marker in _UNSAFE_MARKERS):
        return False
    return mime in _SAFE_EXACT or mime.startswith(_SAFE_PREFIXES)


def choose_mime(head: bytes, declared: str | None) -> str:
    """The MIME type to store: sniffed, else a safe declared type, else octet-stream."""
    found = sniff(head)
    if found:
        return found
    value = normalize_declared(declared)
    if value and is_safe_declared(value):
        return value
    return OCTET_STREAM
