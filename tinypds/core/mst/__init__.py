"""Merkle Search Tree for atproto repositories (pure: no storage, no I/O).

Must not import tinypds.store/services. Modules, one per operation:
  node    Node, key_height, common_prefix_len, MstError, NodeCache (shared LRU)
  codec   encode_node / decode_node (hand-rolled canonical codec), load_node, ensure_encoded
  tree    MST: get, put, delete, items(start, end, reverse), new_blocks, walk_blocks
  diff    mst_diff(old, new) -> MstDiff (record changes + node blocks gained and lost)
  proof   proof_blocks (covering proof) and verify_proof
  verify  verify_tree: streaming canonical-structure check of a stored tree
  build   TreeBuilder / build_tree: bottom-up streaming build from sorted keys

Shape. A node at layer L holds the keys of height L (height = leading zero bits of
sha256(key) // 2, fanout 4) and, between and around them, pointers to layer L-1 subtrees:
{l: left subtree, e: [{p: shared prefix with the previous key, k: rest of key, v: value,
t: subtree right of this key}]}; `l` and `t` are always present, null when absent.
The tree for a key set is unique, so insertion order never changes the root CID.

Tricky bits.
- Insert above the root: the whole tree is split around the new key and, if the key is
  two or more layers higher, wrapped in keyless ("leafless") nodes for the layers between.
- Insert at a layer that has a subtree spanning the key's position: that subtree is split
  around the key recursively, all the way down (a split can cascade through every layer).
- Delete: the subtrees left and right of the removed key are merged, recursively along
  their touching edges; a child left empty is dropped; a root left holding only a pointer
  is trimmed (repeatedly), and an emptied tree becomes the single empty node at layer 0.
- Keyless inner nodes are legal (they only carry `l`); empty inner nodes are not, nor is an
  untrimmed root. A keyless node's layer cannot be read from its keys: parents pass it down.
- Inverting ops (sync v1.1) on a partial tree needs, for each key, the nodes on the paths to
  the key and to its left and right neighbours in the new tree: that is the covering proof.
  Deletes are inverted by re-inserting, which splits along those neighbour paths.
- Nodes are immutable; a mutation builds new Node objects for the changed path only and
  links them as objects (not CIDs) until `root_cid()` encodes them. Encoded nodes are put
  in the cache as clean copies (children by CID) so a later load of that root is not "new".
- Stored nodes are trusted by default (fast path); pass check=True (MST) or use
  verify_tree/verify_proof for blocks from outside: hashes, canonical bytes, heights,
  prefix compression and key order are then all enforced.
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
