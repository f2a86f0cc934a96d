"""The project's own lexicon schemas (records it validates) and the catalog built from them.

Pure: imports core.lexicon only. `default_catalog()` is built once and shared (the catalog is
read-only after loading). The schemas live in schemas.py, written with the helpers of dsl.py.
"""

from __future__ import annotations

from functools import lru_cache

from ..core.lexicon import LexiconCatalog, catalog_from_docs
from .schemas import DEFS, documents

__all__ = ["DEFS", "default_catalog", "documents", "record_types"]


@lru_cache(maxsize=1)
def default_catalog() -> LexiconCatalog:
    """A catalog of every schema in schemas.py."""
    return catalog_from_docs(documents())


def record_types() -> list[str]:
    """NSIDs of the record types this PDS knows (validates)."""
    return sorted(n for n, defs in DEFS.items() if defs.get("main", {}).get("type") == "record")
