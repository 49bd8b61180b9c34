"""billing.audit.merkle against transparency-dev/merkle's published vectors (../shared/fixtures/rfc6962): the roots
and compact trees of testonly/constants.go, and every inclusion and consistency case of testdata/ (valid ones
verify, every mutation marked wantErr fails)."""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from billing.audit import merkle
from tests.shared_material import shared_dir

FIXTURES = shared_dir() / "fixtures" / "rfc6962"
CONSTANTS = FIXTURES / "testonly" / "constants.go"


def _cases(kind: str) -> list[Path]:
    return sorted((FIXTURES / "testdata" / kind).rglob("*.json"))


def _id(path: Path) -> str:
    return str(path.relative_to(FIXTURES / "testdata"))


def _function_body(source: str, name: str) -> str:
    match = re.search(rf"func {name}\(\)[^{{]*\{{(.*?)\n\}}", source, re.DOTALL)
    assert match, name
    return match.group(1)


def hexes(body: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in re.findall(r'hd\("([0-9a-f]*)"\)', body)]


@cache
def _constants() -> dict[str, Any]:
    source = CONSTANTS.read_text(encoding="utf-8")
    node_body = _function_body(source, "NodeHashes")
    levels = [hexes(level) for level in re.split(r"\}, \{", node_body)]
    compact_body = _function_body(source, "CompactTrees")
    compact: list[list[bytes]] = []
    for line in compact_body.splitlines():
        line = line.strip()
        if line.startswith("nil"):
            compact.append([])
        elif line.startswith("{nh"):
            refs = re.findall(r"nh\[(\d+)\]\[(\d+)\]", line)
            compact.append([levels[int(a)][int(b)] for a, b in refs])
    empty = hexes(_function_body(source, "EmptyRootHash"))
    roots = empty + hexes(_function_body(source, "RootHashes"))
    return {"leaves": hexes(_function_body(source, "LeafInputs")), "nodes": levels, "roots": roots, "compact": compact}


def test_the_fixtures_are_there_and_complete() -> None:
    # Nothing is skipped: a missing folder fails here rather than running zero cases below.
    assert CONSTANTS.is_file(), f"transparency-dev/merkle vectors expected at {FIXTURES}"
    constants = _constants()
    assert len(constants["leaves"]) == 8
    assert len(constants["roots"]) == 9
    assert [len(level) for level in constants["nodes"]] == [8, 4, 2, 1]
    assert len(constants["compact"]) == 9
    assert len(_cases("inclusion")) > 50
    assert len(_cases("consistency")) > 50


def test_empty_tree_root_is_the_hash_of_nothing() -> None:
    assert merkle.root([]) == merkle.EMPTY_ROOT == _constants()["roots"][0]


@pytest.mark.parametrize("size", range(9))
def test_root_of_every_prefix_matches_the_reference(size: int) -> None:
    constants = _constants()
    hashes = [merkle.leaf_hash(leaf) for leaf in constants["leaves"][:size]]
    assert merkle.root(hashes) == constants["roots"][size]


@pytest.mark.parametrize("size", range(9))
def test_compact_range_matches_the_reference_compact_tree(size: int) -> None:
    constants = _constants()
    frontier = merkle.CompactRange()
    frontier.extend(merkle.leaf_hash(leaf) for leaf in constants["leaves"][:size])
    assert frontier.hashes == constants["compact"][size]
    reloaded = merkle.CompactRange(size, constants["compact"][size])
    assert reloaded.root() == constants["roots"][size]


def test_node_hashes_of_every_complete_subtree_match() -> None:
    constants = _constants()
    hashes = [merkle.leaf_hash(leaf) for leaf in constants["leaves"]]
    for level, nodes in enumerate(constants["nodes"]):
        width = 1 << level
        assert [merkle.root(hashes[i * width : (i + 1) * width]) for i in range(len(nodes))] == nodes


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


@pytest.mark.parametrize("path", _cases("inclusion"), ids=_id)
def test_inclusion_vector(path: Path) -> None:
    case = _load(path)
    proof = [_b64(h) for h in case["proof"] or []]

    def verify() -> None:
        merkle.verify_inclusion(case["leafIdx"], case["treeSize"], _b64(case["leafHash"]), proof, _b64(case["root"]))

    if case["wantErr"]:
        with pytest.raises(merkle.ProofError):
            verify()
    else:
        verify()


@pytest.mark.parametrize("path", _cases("consistency"), ids=_id)
def test_consistency_vector(path: Path) -> None:
    case = _load(path)
    proof = [_b64(h) for h in case["proof"] or []]

    def verify() -> None:
        merkle.verify_consistency(case["size1"], case["size2"], proof, _b64(case["root1"]), _b64(case["root2"]))

    if case["wantErr"]:
        with pytest.raises(merkle.ProofError):
            verify()
    else:
        verify()


def test_the_vectors_hold_both_valid_and_failing_cases() -> None:
    for kind in ("inclusion", "consistency"):
        wanted = [_load(path)["wantErr"] for path in _cases(kind)]
        assert wanted.count(False) >= 5, kind
        assert wanted.count(True) >= 40, kind


@pytest.mark.parametrize("size", range(1, 9))
def test_generated_inclusion_proofs_match_the_valid_vectors(size: int) -> None:
    # Our generator gives the same proof the reference verifier accepts for every leaf of every reference tree.
    constants = _constants()
    hashes = [merkle.leaf_hash(leaf) for leaf in constants["leaves"][:size]]
    for index in range(size):
        proof = merkle.inclusion_proof(index, hashes)
        merkle.verify_inclusion(index, size, hashes[index], proof, constants["roots"][size])
    valid = [
        _load(path)
        for path in _cases("inclusion")
        if not _load(path)["wantErr"] and _load(path)["treeSize"] == size and path.parent.name != "single-entry"
    ]
    for case in valid:
        assert merkle.inclusion_proof(case["leafIdx"], hashes) == [_b64(h) for h in case["proof"] or []]


def test_generated_consistency_proofs_match_the_valid_vectors() -> None:
    constants = _constants()
    hashes = [merkle.leaf_hash(leaf) for leaf in constants["leaves"]]
    valid = [_load(p) for p in _cases("consistency") if not _load(p)["wantErr"] and p.parent.name != "additional"]
    assert valid
    for case in valid:
        generated = merkle.consistency_proof(case["size1"], hashes[: case["size2"]])
        assert generated == [_b64(h) for h in case["proof"] or []], case["desc"]
