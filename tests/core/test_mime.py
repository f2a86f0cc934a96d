"""MIME sniffing: signatures recognised, unsafe declared types neutralised."""

from __future__ import annotations

import pytest

from tinypds.core.mime import OCTET_STREAM, choose_mime, normalize_declared, sniff


def _ftyp(major: bytes, *compat: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compat)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\x00" * 32


EBML_WEBM = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm"
EBML_MKV = EBML_WEBM.replace(b"\x84webm", b"\x88matroska")

CASES = [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
    (b"GIF89a\x01\x00\x01\x00", "image/gif"),
    (b"GIF87a\x01\x00\x01\x00", "image/gif"),
    (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav"),
    (_ftyp(b"avif", b"mif1", b"miaf"), "image/avif"),
    (_ftyp(b"mif1", b"avif"), "image/heif"),
    (_ftyp(b"heic", b"mif1"), "image/heic"),
    (_ftyp(b"isom", b"iso2", b"avc1", b"mp41"), "video/mp4"),
    (_ftyp(b"mp42", b"isom"), "video/mp4"),
    (_ftyp(b"qt  ", b"qt  "), "video/quicktime"),
    (_ftyp(b"M4A ", b"isom"), "audio/mp4"),
    (EBML_WEBM, "video/webm"),
    (EBML_MKV, "video/x-matroska"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00", "audio/mpeg"),
    (b"\xff\xfb\x90\x64\x00", "audio/mpeg"),
    (b"\xff\xf1\x50\x80\x00", "audio/aac"),
    (b"OggS\x00\x02" + b"\x00" * 22 + b"\x01\x1e\x01vorbis", "audio/ogg"),
    (b"OggS\x00\x02" + b"\x00" * 22 + b"\x80theora", "video/ogg"),
    (b"fLaC\x00\x00\x00\x22", "audio/flac"),
    (b"%PDF-1.7\n", "application/pdf"),
    (b"II*\x00\x08\x00\x00\x00", "image/tiff"),
]


@pytest.mark.parametrize("head,expected", CASES)
def test_sniff_signatures(head: bytes, expected: str) -> None:
    assert sniff(head) == expected
    # the sniffed type wins over whatever the client declared
    assert choose_mime(head, "text/html") == expected


@pytest.mark.parametrize(
    "head",
    [b"", b"\xff", b"RIFF", b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"<html><script>", b"hello", b"\xff\xff\xff\xff"],
)
def test_unrecognised_is_none(head: bytes) -> None:
    assert sniff(head) is None


@pytest.mark.parametrize(
    "declared,expected",
    [
        ("image/svg+xml", OCTET_STREAM),
        ("text/html; charset=utf-8", OCTET_STREAM),
        ("application/javascript", OCTET_STREAM),
        ("application/xhtml+xml", OCTET_STREAM),
        ("text/xml", OCTET_STREAM),
        ("application/x-sh", OCTET_STREAM),
        (None, OCTET_STREAM),
        ("", OCTET_STREAM),
        ("garbage", OCTET_STREAM),
        ("image/bmp", "image/bmp"),
        ("Video/X-MSVIDEO", "video/x-msvideo"),
        ("audio/opus; codecs=opus", "audio/opus"),
        ("text/plain", "text/plain"),
    ],
)
def test_declared_fallback(declared: str | None, expected: str) -> None:
    assert choose_mime(b"<svg onload=alert(1)>", declared) == expected


def test_normalize_declared() -> None:
    assert normalize_declared(" Image/PNG ; q=1") == "image/png"
    assert normalize_declared("image/") is None
    assert normalize_declared("image png") is None
