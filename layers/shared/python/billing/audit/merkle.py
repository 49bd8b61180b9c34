"""RFC 6962 Merkle trees (section 2.1): hashing, roots, inclusion and consistency proofs, for any tree size.

Pure: hashlib only. Leaf hash SHA-256(0x00 || leaf), node hash SHA-256(0x01 || left || right), the root of an
empty tree SHA-256(""). The split of a tree of n > 1 leaves is at k, the largest power of two below n, so trees of
any size are defined (not only powers of two).

Verification follows transparency-dev/merkle (proof/verify.go) step for step; tests/unit/audit run its published
test vectors (../shared/fixtures/rfc6962), every valid case verifying and every mutation failing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Final

HASH_SIZE: Final = 32
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof that does not prove what it claims (wrong shape, sizes or hashes)."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two strictly below size (size > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


class CompactRange:
    """The frontier of a tree: the roots of its perfect subtrees, left to right, largest first.

    Appending a leaf costs O(log n) and the root is computed from at most log2(n) + 1 hashes, so the sequencer extends
    the last checkpoint's tree without reading every leaf again. The hashes are stored with each checkpoint; the
    subtree sizes follow from the tree size (its binary digits).
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(hashes) != size.bit_count():
            raise ProofError(f"a compact range of a tree of {size} leaves has {size.bit_count()} hashes")
        if any(len(h) != HASH_SIZE for h in hashes):
            raise ProofError("compact range hashes are SHA-256 digests")
        self._size = size
        sizes = [1 << bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]
        self._stack: list[tuple[int, bytes]] = list(zip(sizes, hashes, strict=True))

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        return [h for _, h in self._stack]

    def append(self, hash_of_leaf: bytes) -> None:
        if len(hash_of_leaf) != HASH_SIZE:
            raise ProofError("leaf hashes are SHA-256 digests")
        self._stack.append((1, hash_of_leaf))
        while len(self._stack) > 1 and self._stack[-1][0] == self._stack[-2][0]:
            (size, right), (_, left) = self._stack.pop(), self._stack.pop()
            self._stack.append((2 * size, node_hash(left, right)))
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        result = self._stack[-1][1]
        for _, h in reversed(self._stack[:-1]):
            result = node_hash(h, result)
        return result


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the given leaf hashes."""
    frontier = CompactRange()
    frontier.extend(leaf_hashes)
    return frontier.root()


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) (RFC 6962 2.1.1): the audit path of leaf `index` in the tree of `leaf_hashes`, leaf first."""
    if not 0 <= index < len(leaf_hashes):
        raise ProofError(f"leaf {index} is not in a tree of {len(leaf_hashes)} leaves")
    path: list[bytes] = []
    start, end, m = 0, len(leaf_hashes), index
    # Walk down from the root, collecting the sibling of each subtree on the way; the path lists them bottom-up.
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            path.append(root(leaf_hashes[start + k : end]))
            end = start + k
        else:
            path.append(root(leaf_hashes[start : start + k]))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) (RFC 6962 2.1.2): that the tree of the first `old_size` leaves is a prefix of this one."""
    new_size = len(leaf_hashes)
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from {old_size} to {new_size} leaves")
    proof: list[bytes] = []
    start, end, m, whole = 0, new_size, old_size, True
    # SUBPROOF(m, D[start:end], whole), unrolled: each step adds one hash and descends into one half.
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append(root(leaf_hashes[start + k : end]))
            end = start + k
        else:
            proof.append(root(leaf_hashes[start : start + k]))
            start, m, whole = start + k, m - k, False
    if not whole:
        proof.append(root(leaf_hashes[start:end]))
    proof.reverse()
    return proof


# --- Verification (transparency-dev/merkle proof/verify.go) ----------------------------------------------------


def _inner_proof_size(index: int, size: int) -> int:
    return (index ^ (size - 1)).bit_length()


def _decompose(index: int, size: int) -> tuple[int, int]:
    """How many proof hashes are below the point where the leaf's path leaves the tree's right border, and above."""
    inner = _inner_proof_size(index, size)
    return inner, (index >> inner).bit_count()


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(seed, h) if (index >> i) & 1 == 0 else node_hash(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1 == 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def root_from_inclusion_proof(index: int, size: int, hash_of_leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` implies for leaf `index` of a tree of `size`; ProofError if its shape is wrong."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is beyond the tree size {size}")
    if len(hash_of_leaf) != HASH_SIZE:
        raise ProofError(f"leaf hash has {len(hash_of_leaf)} bytes, want {HASH_SIZE}")
    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise ProofError(f"wrong proof size {len(proof)}, want {inner + border}")
    result = _chain_inner(hash_of_leaf, proof[:inner], index)
    return _chain_border_right(result, proof[inner:])


def verify_inclusion(index: int, size: int, hash_of_leaf: bytes, proof: Sequence[bytes], expected_root: bytes) -> None:
    """Raise ProofError unless `proof` shows leaf `index` with `hash_of_leaf` in the tree of `size` and root."""
    calculated = root_from_inclusion_proof(index, size, hash_of_leaf, proof)
    if calculated != expected_root:
        raise ProofError("inclusion proof leads to another root")


def verify_consistency(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes) -> None:
    """Raise ProofError unless `proof` shows the tree (old_size, old_root) is a prefix of (new_size, new_root)."""
    if new_size < old_size:
        raise ProofError(f"new size {new_size} < old size {old_size}")
    if old_size == 0:
        # Every tree extends the empty one: such a proof would prove nothing.
        raise ProofError("consistency with an empty tree proves nothing")
    if old_size == new_size:
        if proof:
            raise ProofError("equal sizes, but the proof is not empty")
        if old_root != new_root:
            raise ProofError("equal sizes, different roots")
        return
    if not proof:
        raise ProofError("empty proof")
    inner, border = _decompose(old_size - 1, new_size)
    shift = (old_size & -old_size).bit_length() - 1  # trailing zero bits of old_size
    inner -= shift
    # The proof starts with the root of the subtree of size 2^shift, unless old_size is that very subtree.
    seed, start = (old_root, 0) if old_size == 1 << shift else (proof[0], 1)
    if len(proof) != start + inner + border:
        raise ProofError(f"wrong proof size {len(proof)}, want {start + inner + border}")
    rest = proof[start:]
    mask = (old_size - 1) >> shift
    old_calculated = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    if old_calculated != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    new_calculated = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    if new_calculated != new_root:
        raise ProofError("consistency proof does not lead to the new root")


class MerkleTree:
    """Every perfect subtree of a tree held in memory (about twice the leaf hashes), so that roots of any prefix and
    inclusion and consistency proofs cost O(log n) node lookups instead of rehashing leaves (verify, the API)."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append(h)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def append(self, hash_of_leaf: bytes) -> None:
        if len(hash_of_leaf) != HASH_SIZE:
            raise ProofError("leaf hashes are SHA-256 digests")
        self._levels[0].append(hash_of_leaf)
        level = 0
        # A node completes when its right child does: climb while the new node is a right child.
        while len(self._levels[level]) % 2 == 0:
            nodes = self._levels[level]
            parent = node_hash(nodes[-2], nodes[-1])
            if len(self._levels) == level + 1:
                self._levels.append([])
            self._levels[level + 1].append(parent)
            level += 1

    def _range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range whose start is aligned to a power of two at least its length (every range
        the RFC's recursion visits is): the fold of the aligned perfect subtrees that tile it."""
        nodes: list[bytes] = []
        while start < end:
            level = (end - start).bit_length() - 1
            while start % (1 << level):
                level -= 1
            nodes.append(self._levels[level][start >> level])
            start += 1 << level
        result = nodes[-1]
        for h in reversed(nodes[:-1]):
            result = node_hash(h, result)
        return result

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ProofError(f"no tree of {size} leaves here (the tree has {self.size})")
        return EMPTY_ROOT if size == 0 else self._range_hash(0, size)

    def frontier(self, size: int) -> list[bytes]:
        """The CompactRange hashes of the first `size` leaves: its perfect subtrees, largest first."""
        if not 0 <= size <= self.size:
            raise ProofError(f"no tree of {size} leaves here (the tree has {self.size})")
        hashes, start = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                hashes.append(self._levels[level][start >> level])
                start += 1 << level
        return hashes

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        if not 0 <= index < size <= self.size:
            raise ProofError(f"leaf {index} is not in a tree of {size} leaves")
        path: list[bytes] = []
        start, end, m = 0, size, index
        while end - start > 1:
            k = _split(end - start)
            if m < k:
                path.append(self._range_hash(start + k, end))
                end = start + k
            else:
                path.append(self._range_hash(start, start + k))
                start, m = start + k, m - k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        if not 0 < old_size <= new_size <= self.size:
            raise ProofError(f"no consistency proof from {old_size} to {new_size} leaves")
        proof: list[bytes] = []
        start, end, m, whole = 0, new_size, old_size, True
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self._range_hash(start + k, end))
                end = start + k
            else:
                proof.append(self._range_hash(start, start + k))
                start, m, whole = start + k, m - k, False
        if not whole:
            proof.append(self._range_hash(start, end))
        proof.reverse()
        return proof
