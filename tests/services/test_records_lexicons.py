"""The project's own record schemas (tinypds/lexicons) agree with the published lexicons.

Compares every definition we ship with the same definition in ../shared/lexicons: types,
required fields, property names, constraints (lengths, graphemes, min/max, sizes, accept),
formats, refs, union members and record keys. Descriptions and knownValues are ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tinypds.core.lexicon import LexiconNotFound
from tinypds.lexicons import DEFS, default_catalog, record_types

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPARED = ("type", "required", "nullable", "format", "maxLength", "minLength", "maxGraphemes",
            "minGraphemes", "minimum", "maximum", "const", "enum", "accept", "maxSize", "ref",
            "refs", "closed", "key")
EXPECTED_RECORDS = {
    "app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.feed.repost", "app.bsky.feed.threadgate",
    "app.bsky.feed.postgate", "app.bsky.feed.generator", "app.bsky.graph.follow", "app.bsky.graph.block",
    "app.bsky.graph.list", "app.bsky.graph.listitem", "app.bsky.graph.listblock",
    "app.bsky.graph.starterpack", "app.bsky.graph.verification", "app.bsky.actor.profile",
    "app.bsky.actor.status", "app.bsky.labeler.service", "app.bsky.notification.declaration",
    "chat.bsky.actor.declaration",
}


def _published_root() -> Path:
    root = Path(os.environ.get("ATPROTO_LEXICONS", REPO_ROOT.parent / "shared" / "lexicons"))
    if not root.is_dir():
        pytest.skip(f"published lexicons not found at {root}")
    return root


def _published(nsid: str) -> dict:
    path = _published_root().joinpath(*nsid.split(".")).with_suffix(".json")
    assert path.is_file(), f"{nsid}: no published lexicon at {path}"
    return json.loads(path.read_text())["defs"]


def _diff(ours: object, theirs: object, where: str) -> list[str]:
    """Human-readable differences between two schema nodes (only the compared keys)."""
    if not (isinstance(ours, dict) and isinstance(theirs, dict)):
        return [] if ours == theirs else [f"{where}: {ours!r} != {theirs!r}"]
    out = []
    for key in COMPARED:
        a, b = ours.get(key), theirs.get(key)
        if key in ("required", "nullable", "accept", "refs", "enum") and a is not None and b is not None:
            a, b = (sorted(a), sorted(b)) if key != "refs" else (a, b)
        if key == "required":
            a, b = a or [], b or []
        if a != b:
            out.append(f"{where}/{key}: ours {a!r}, published {b!r}")
    for sub in ("items", "record"):
        if sub in ours or sub in theirs:
            out += _diff(ours.get(sub), theirs.get(sub), f"{where}/{sub}")
    if "properties" in ours or "properties" in theirs:
        p_ours, p_theirs = ours.get("properties", {}), theirs.get("properties", {})
        for name in sorted(set(p_ours) | set(p_theirs)):
            if name not in p_ours:
                out.append(f"{where}/{name}: missing from our schema")
            elif name not in p_theirs:
                out.append(f"{where}/{name}: not in the published schema")
            else:
                out += _diff(p_ours[name], p_theirs[name], f"{where}/{name}")
    return out


@pytest.mark.parametrize("nsid", sorted(DEFS))
def test_our_definitions_match_the_published_ones(nsid):
    published = _published(nsid)
    problems = []
    for name, ours in DEFS[nsid].items():
        if name not in published:
            problems.append(f"{nsid}#{name}: not published")
            continue
        problems += _diff(ours, published[name], f"{nsid}#{name}")
    assert not problems, "\n".join(problems)


def test_every_expected_record_type_is_known():
    assert EXPECTED_RECORDS <= set(record_types())


def test_every_ref_resolves_in_our_catalog():
    """Closure: a ref to a definition we did not write would make validation fail at runtime."""
    cat = default_catalog()
    missing = []

    def walk(node: object, nsid: str) -> None:
        if isinstance(node, dict):
            targets = [node["ref"]] if node.get("type") == "ref" else node.get("refs", []) if node.get("type") == "union" else []
            for target in targets:
                try:
                    cat.get_def(target, nsid)
                except LexiconNotFound:
                    missing.append(f"{nsid}: {target}")
            for v in node.values():
                walk(v, nsid)
        elif isinstance(node, list):
            for v in node:
                walk(v, nsid)

    for nsid, defs in DEFS.items():
        walk(defs, nsid)
    assert not missing, missing


def test_the_comparison_can_fail():
    ours = {"type": "string", "maxGraphemes": 300}
    assert _diff(ours, {"type": "string", "maxGraphemes": 3000}, "x")
    assert _diff({"type": "object", "properties": {"a": ours}}, {"type": "object", "properties": {}}, "x")
    assert _diff({"type": "union", "refs": ["#a"]}, {"type": "union", "refs": ["#a", "#b"]}, "x")
    assert not _diff(ours, {"type": "string", "maxGraphemes": 300, "description": "d", "knownValues": ["q"]}, "x")
