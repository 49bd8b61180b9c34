"""billing.audit.merkle for trees of every shape, against a direct transcription of RFC 6962 section 2.1."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.audit import merkle


def _mth(hashes: list[bytes]) -> bytes:
    """MTH straight from the RFC, recursively."""
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return merkle.node_hash(_mth(hashes[:k]), _mth(hashes[k:]))


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert merkle.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert merkle.leaf_hash(b"\x01" + b"a" * 64) != merkle.node_hash(b"a" * 32, b"a" * 32)


@pytest.mark.parametrize("size", [*range(0, 70), 127, 128, 129, 1000, 1023, 1025])
def test_root_matches_the_rfc_for_sizes_that_are_not_powers_of_two(size: int) -> None:
    assert merkle.root(_leaves(size)) == _mth(_leaves(size))


@given(size=st.integers(1, 300), data=st.data())
def test_every_generated_inclusion_proof_verifies_and_no_other_leaf_does(size: int, data: st.DataObject) -> None:
    hashes = _leaves(size)
    tree_root = merkle.root(hashes)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(index, hashes)
    merkle.verify_inclusion(index, size, hashes[index], proof, tree_root)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(index, size, merkle.leaf_hash(b"not in the tree"), proof, tree_root)
    if size > 1:
        other = (index + 1) % size
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(other, size, hashes[index], proof, tree_root)


@given(new_size=st.integers(1, 300), data=st.data())
def test_every_generated_consistency_proof_verifies_and_a_rewritten_history_does_not(
    new_size: int, data: st.DataObject
) -> None:
    hashes = _leaves(new_size)
    old_size = data.draw(st.integers(1, new_size))
    proof = merkle.consistency_proof(old_size, hashes)
    old_root, new_root = merkle.root(hashes[:old_size]), merkle.root(hashes)
    merkle.verify_consistency(old_size, new_size, proof, old_root, new_root)
    # The same new tree with one earlier leaf changed is not an extension of the old one.
    changed = list(hashes)
    position = data.draw(st.integers(0, old_size - 1))
    changed[position] = merkle.leaf_hash(b"rewritten")
    forged_proof = merkle.consistency_proof(old_size, changed)
    with pytest.raises(merkle.ProofError):
        merkle.verify_consistency(old_size, new_size, forged_proof, old_root, merkle.root(changed))


@given(size=st.integers(0, 300), more=st.integers(0, 50))
def test_a_compact_range_reloaded_from_its_hashes_extends_to_the_same_root(size: int, more: int) -> None:
    hashes = _leaves(size + more)
    first = merkle.CompactRange()
    first.extend(hashes[:size])
    reloaded = merkle.CompactRange(first.size, first.hashes)
    reloaded.extend(hashes[size:])
    assert reloaded.root() == _mth(hashes)
    assert len(first.hashes) == size.bit_count()


def test_a_compact_range_with_the_wrong_number_of_hashes_is_refused() -> None:
    with pytest.raises(merkle.ProofError):
        merkle.CompactRange(3, [b"a" * 32])


def test_proofs_for_leaves_or_sizes_outside_the_tree_are_refused() -> None:
    with pytest.raises(merkle.ProofError):
        merkle.inclusion_proof(5, _leaves(5))
    with pytest.raises(merkle.ProofError):
        merkle.consistency_proof(0, _leaves(5))
    with pytest.raises(merkle.ProofError):
        merkle.consistency_proof(6, _leaves(5))


@given(size=st.integers(1, 200), data=st.data())
def test_the_in_memory_tree_gives_the_same_roots_and_proofs_as_the_direct_functions(
    size: int, data: st.DataObject
) -> None:
    hashes = _leaves(size)
    tree = merkle.MerkleTree(hashes)
    prefix = data.draw(st.integers(1, size))
    index = data.draw(st.integers(0, prefix - 1))
    old = data.draw(st.integers(1, prefix))
    assert tree.root(prefix) == _mth(hashes[:prefix])
    assert tree.inclusion_proof(index, prefix) == merkle.inclusion_proof(index, hashes[:prefix])
    assert tree.consistency_proof(old, prefix) == merkle.consistency_proof(old, hashes[:prefix])


def test_the_in_memory_tree_refuses_sizes_it_does_not_hold() -> None:
    tree = merkle.MerkleTree(_leaves(3))
    assert tree.root(0) == merkle.EMPTY_ROOT
    with pytest.raises(merkle.ProofError):
        tree.root(4)
    with pytest.raises(merkle.ProofError):
        tree.inclusion_proof(3, 3)


@given(size=st.integers(0, 200))
def test_the_in_memory_trees_frontier_is_the_compact_range(size: int) -> None:
    hashes = _leaves(size)
    frontier = merkle.CompactRange()
    frontier.extend(hashes)
    assert merkle.MerkleTree(hashes).frontier(size) == frontier.hashes
