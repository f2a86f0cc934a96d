"""Locate the public atproto interop fixtures; skip tests clearly when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parent.parent


def interop_root() -> Path | None:
    env = os.environ.get("ATPROTO_INTEROP_TESTS")
    candidates = [Path(env)] if env else []
    candidates.append(_REPO.parent / "shared" / "interop-tests")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def fixture_path(*parts: str) -> Path:
    root = interop_root()
    if root is None:
        pytest.skip(
            "atproto interop fixtures not found: set ATPROTO_INTEROP_TESTS or place them at ../shared/interop-tests"
        )
    p = root.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"interop fixture {p} not present")
    return p


def fixture_lines(*parts: str) -> list[str]:
    """Non-comment, non-blank lines of a syntax fixture (whitespace preserved inside lines)."""
    out = []
    for line in fixture_path(*parts).read_text(encoding="utf-8").split("\n"):
        if not line.strip() or line.startswith("#"):
            continue
        out.append(line)
    return out
