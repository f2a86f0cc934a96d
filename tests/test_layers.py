"""Imports only go downhill (core <- store <- services <- {xrpc, app, cli}) and each
third-party library is imported only by its owner module. Checked on the AST of every
module, including imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "tinypds"

# layer of a module -> tinypds layers it must not import
FORBIDDEN = {
    "core": {"store", "services", "xrpc", "app", "cli", "config"},
    "store": {"services", "xrpc", "app", "cli"},
    "services": {"xrpc", "app", "cli"},
    "xrpc": {"store", "app", "cli"},
    "pages": {"store", "xrpc", "app", "cli"},
    "config": {"core", "store", "services", "xrpc", "app", "cli", "errors"},
    "errors": {"core", "store", "services", "xrpc", "app", "cli", "config"},
    "http_serve": {"core", "store", "services", "cli"},
}

# third-party top-level package -> modules (relative to tinypds/, "dir/" = a whole package) allowed to import it
OWNERS = {
    "cbor2": {"core/dagcbor.py"},
    "multiformats": {"core/cid.py"},
    "apsw": {"store/"},
    "keyring": {"services/identity/keys.py"},
    "coincurve": {"core/crypto.py"},
    "cryptography": {"core/crypto.py"},
    "msgspec": {"xrpc/"},
    "litestar": {"app.py", "xrpc/", "pages/"},  # the web framework: handlers, pages and the app
    "uvicorn": {"http_serve.py"},  # the ASGI server: its settings and shutdown in one place
    "httptools": set(),  # uvicorn's: nothing in tinypds parses or frames HTTP itself
    "wsproto": set(),
    "h11": set(),
    "dns": {"services/identity/resolver.py"},
}


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, source: str | None = None) -> list[tuple[str, int]]:
    """Absolute dotted names imported by the module (relative imports resolved)."""
    if source is None:
        source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or node.level and not node.module:
                # `from . import x` / `from .. import x`: each name may be a module
                out.extend((f"{target}.{alias.name}", node.lineno) for alias in node.names)
            else:
                out.append((target, node.lineno))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                out.append((node.args[0].value, node.lineno))
    return out


def _layer(rel: str) -> str:
    return rel.split("/", 1)[0].removesuffix(".py")


def _owned_by(rel: str, owners: set[str]) -> bool:
    return any(rel == o or (o.endswith("/") and rel.startswith(o)) for o in owners)


def test_there_are_modules_to_check():
    names = {_module_name(p) for p in _modules()}
    assert "tinypds.config" in names and "tinypds.errors" in names
    assert any(n.startswith("tinypds.core.") for n in names)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_go_downhill(path: Path):
    rel = path.relative_to(PKG).as_posix()
    forbidden = FORBIDDEN.get(_layer(rel), set())
    bad = []
    for target, line in _imports(path):
        parts = target.split(".")
        if parts[0] == "tinypds" and len(parts) > 1 and parts[1] in forbidden:
            bad.append(f"line {line}: {target}")
    assert not bad, f"{rel} ({_layer(rel)}) imports uphill: {bad}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_third_party_libraries_have_one_owner(path: Path):
    rel = path.relative_to(PKG).as_posix()
    bad = []
    for target, line in _imports(path):
        top = target.split(".")[0]
        owners = OWNERS.get(top)
        if owners is not None and not _owned_by(rel, owners):
            bad.append(f"line {line}: {target} (owner: {', '.join(sorted(owners))})")
    assert not bad, f"{rel} imports libraries it does not own: {bad}"


def test_checker_catches_a_violation():
    # the checker itself must be able to fail: a (virtual) core module importing the store
    probe = PKG / "core" / "probe.py"
    imports = [t for t, _ in _imports(probe, "from ..store import db\nfrom .. import app\nimport apsw\n")]
    assert imports == ["tinypds.store", "tinypds.app", "apsw"]
    assert not _owned_by("core/probe.py", OWNERS["apsw"])
    assert _owned_by("store/blocks.py", OWNERS["apsw"])


# the service subpackages, bottom first: each may import only those before it (and its own modules)
SERVICE_ORDER = ["net", "repo", "identity", "sync", "auth", "account", "migration", "proxy", "ops"]


def test_service_subpackages_import_downhill_only():
    rank = {name: i for i, name in enumerate(SERVICE_ORDER)}
    found = {p.name for p in (PKG / "services").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert found == set(SERVICE_ORDER), f"a service subpackage is missing from SERVICE_ORDER: {found ^ set(SERVICE_ORDER)}"
    bad = []
    for path in _modules():
        rel = path.relative_to(PKG).parts
        if rel[0] != "services" or len(rel) < 3:
            continue
        own = rel[1]
        for target, line in _imports(path):
            parts = target.split(".")
            if parts[:2] != ["tinypds", "services"] or len(parts) < 3 or parts[2] in (own, "container"):
                continue
            other = parts[2]
            if other not in rank or rank[other] >= rank[own]:
                bad.append(f"{'/'.join(rel)}:{line} imports {target}")
            elif any(p.startswith("_") for p in parts[3:]):
                bad.append(f"{'/'.join(rel)}:{line} reaches into a private module: {target}")
    assert not bad, "service subpackages must import downhill only:\n" + "\n".join(bad)


def test_each_service_subpackage_says_what_it_owns():
    for name in SERVICE_ORDER:
        doc = ast.get_docstring(ast.parse((PKG / "services" / name / "__init__.py").read_text()))
        assert doc and "May import" in doc, f"services/{name}/__init__.py must say what it owns and may import"

