"""The store's Merkle code against the Certificate Transparency known-answer vectors.

The leaves, roots and proofs below are the RFC 6962 test vectors used by Certificate
Transparency, as published in transparency-dev/merkle, proof/verify_test.go (variables
``leaves``, ``roots``, ``inclusionProofs``, ``consistencyProofs``; commit 02194e9a). Their
inclusion vectors number leaves from 1; here they are converted to 0-based indexes.
"""

from __future__ import annotations

import hashlib
import random

import pytest

from detpack.store import merkle

LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (0-based leaf index, tree size, audit path)
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
# (old size, new size, proof)
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip

HASHES = [merkle.leaf_hash(leaf) for leaf in LEAVES]


def test_empty_tree_is_the_hash_of_nothing() -> None:
    assert merkle.root([]).hex() == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_of_every_prefix(size: int) -> None:
    assert merkle.root(HASHES[:size]).hex() == ROOTS[size - 1]


def test_the_eight_leaf_root() -> None:
    assert merkle.root(HASHES).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_match_and_verify(index: int, size: int, path: list[str]) -> None:
    proof = merkle.inclusion_proof(index, HASHES[:size])
    assert [p.hex() for p in proof] == path
    root = bytes.fromhex(ROOTS[size - 1])
    assert merkle.verify_inclusion(index, size, HASHES[index], proof, root)
    # The corruptions CT's verifier tests try: each must fail.
    assert not merkle.verify_inclusion(index + 1, size, HASHES[index], proof, root)
    assert not index or not merkle.verify_inclusion(index - 1, size, HASHES[index], proof, root)
    assert not merkle.verify_inclusion(index, size * 2, HASHES[index], proof, root)
    assert not merkle.verify_inclusion(index, size, merkle.leaf_hash(b"WrongLeaf"), proof, root)
    assert not merkle.verify_inclusion(index, size, HASHES[index], [*proof, root], root)
    assert not merkle.verify_inclusion(index, size, HASHES[index], [root, *proof], root)
    if proof:
        assert not merkle.verify_inclusion(index, size, HASHES[index], proof[:-1], root)
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([proof[i][0] ^ 8]) + proof[i][1:]
        assert not merkle.verify_inclusion(index, size, HASHES[index], flipped, root)


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_consistency_proofs_match_and_verify(old: int, new: int, path: list[str]) -> None:
    proof = merkle.consistency_proof(old, HASHES[:new])
    assert [p.hex() for p in proof] == path
    r1, r2 = bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1])
    assert merkle.verify_consistency(old, new, r1, r2, proof)
    if not proof:
        return
    assert not merkle.verify_consistency(old, new, r2, r1, proof)
    assert not merkle.verify_consistency(old - 1 or 2, new, r1, r2, proof)
    assert not merkle.verify_consistency(old, new * 2, r1, r2, proof)
    assert not merkle.verify_consistency(old, new, r1, r2, [])
    assert not merkle.verify_consistency(old, new, r1, r2, proof[:-1])
    assert not merkle.verify_consistency(old, new, r1, r2, [*proof, r2])
    assert not merkle.verify_consistency(old, new, r1, r2, [r1, *proof])
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([proof[i][0] ^ 16]) + proof[i][1:]
        assert not merkle.verify_consistency(old, new, r1, r2, flipped)


def test_generated_proofs_verify_for_every_size_up_to_40() -> None:
    rng = random.Random(6962)
    leaves = [merkle.leaf_hash(rng.randbytes(rng.randrange(40))) for _ in range(40)]
    roots = [merkle.root(leaves[:n]) for n in range(41)]
    for n in range(1, 41):
        for i in range(n):
            assert merkle.verify_inclusion(i, n, leaves[i], merkle.inclusion_proof(i, leaves[:n]), roots[n])
        for m in range(0, n + 1):
            proof = merkle.consistency_proof(m, leaves[:n])
            assert merkle.verify_consistency(m, n, roots[m], roots[n], proof)
            if 0 < m < n:
                assert not merkle.verify_consistency(m, n, roots[m - 1], roots[n], proof)


def test_out_of_range_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        merkle.inclusion_proof(8, HASHES)
    with pytest.raises(ValueError, match="outside"):
        merkle.consistency_proof(9, HASHES)
    assert not merkle.verify_consistency(2, 1, HASHES[0], HASHES[1], [])
