"""Merkle Search Tree for atproto repositories (pure; no storage, no I/O).

Modules: node (encoding, heights, cache), tree (MST: get/put/delete/items/blocks),
diff (mst_diff), proof (covering proofs), verify (verify_tree), build (bottom-up build).
Must not import tinypds.store/services.
"""

from .build import TreeBuilder, build_tree
from .diff import MstDiff, mst_diff
from .node import DEFAULT_CACHE, MstError, Node, NodeCache, common_prefix_len, is_valid_key, key_height
from .proof import proof_blocks, verify_proof
from .tree import MST
from .verify import verify_tree

__all__ = [
    "MST",
    "MstDiff",
    "MstError",
    "Node",
    "NodeCache",
    "DEFAULT_CACHE",
    "TreeBuilder",
    "build_tree",
    "common_prefix_len",
    "is_valid_key",
    "key_height",
    "mst_diff",
    "proof_blocks",
    "verify_proof",
    "verify_tree",
]
