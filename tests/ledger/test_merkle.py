"""RFC 6962 Merkle trees: the Certificate Transparency reference vectors, then properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.verify import merkle

# RFC 6962 reference data (google/certificate-transparency, transparency-dev/merkle).
CT_DATA = [bytes.fromhex(h) for h in [
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, path) from the same reference suites.
CT_INCLUSION = [
    (0, 1, []),
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
]
CT_LEAVES = [merkle.leaf_hash(data) for data in CT_DATA]


def reference_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH written exactly as the RFC's recursion, for comparison."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + reference_mth(leaves[:k]) + reference_mth(leaves[k:])).digest()


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_roots_match_the_rfc_6962_reference(size):
    assert merkle.root(CT_LEAVES[:size]).hex() == CT_ROOTS[size]


def test_the_empty_tree_is_sha256_of_nothing():
    assert merkle.root([]) == merkle.EMPTY_ROOT == bytes.fromhex(CT_ROOTS[0])


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_inclusion_paths_match_the_reference(index, size, path):
    leaves = CT_LEAVES[:size]

    assert [node.hex() for node in merkle.inclusion_path(leaves, index)] == path
    assert merkle.verify_inclusion(leaves[index], index, size, [bytes.fromhex(p) for p in path],
                                   bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize(("n", "split"), [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512)])
def test_the_split_is_the_largest_power_of_two_below_n(n, split):
    assert merkle.split_point(n) == split


def _leaves(n: int, salt: int = 0) -> list[bytes]:
    return [merkle.leaf_hash(bytes([salt, i])) for i in range(n)]


@pytest.mark.parametrize("n", range(1, 65))
def test_every_leaf_of_every_tree_up_to_64_proves_and_matches_the_recursion(n):
    leaves = _leaves(n)
    root = merkle.root(leaves)

    assert root == reference_mth(leaves)
    for index in range(n):
        path = merkle.inclusion_path(leaves, index)
        assert merkle.root_from_path(leaves[index], index, n, path) == root


@settings(max_examples=300, deadline=None)
@given(data=st.data(), n=st.integers(min_value=1, max_value=64))
def test_a_proof_for_anything_else_fails(data, n):
    leaves = _leaves(n, salt=1)
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    path = merkle.inclusion_path(leaves, index)
    root = merkle.root(leaves)
    other_index = data.draw(st.integers(min_value=0, max_value=n + 2).filter(lambda i: i != index))
    other_size = data.draw(st.integers(min_value=1, max_value=130).filter(lambda s: s != n))

    assert merkle.verify_inclusion(leaves[index], index, n, path, root)
    assert not merkle.verify_inclusion(leaves[index], other_index, n, path, root)
    assert not merkle.verify_inclusion(leaves[index], index, other_size, path, root) or \
        _same_shape(index, n, other_size)
    assert not merkle.verify_inclusion(merkle.leaf_hash(b"other"), index, n, path, root)
    if path:
        flipped = data.draw(st.integers(min_value=0, max_value=len(path) - 1))
        broken = list(path)
        broken[flipped] = bytes([broken[flipped][0] ^ 1]) + broken[flipped][1:]
        assert not merkle.verify_inclusion(leaves[index], index, n, broken, root)
        assert not merkle.verify_inclusion(leaves[index], index, n, path[:-1], root)
    assert not merkle.verify_inclusion(leaves[index], index, n, [*path, root], root)


def _same_shape(index: int, n: int, other: int) -> bool:
    """Sizes whose audit path for ``index`` is the same sequence of left/right steps."""
    return index < other and _steps(index, n) == _steps(index, other)


def _steps(index: int, size: int) -> list[bool]:
    steps, fn, sn = [], index, size - 1
    while sn:
        if fn & 1 or fn == sn:
            steps.append(True)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            steps.append(False)
        fn >>= 1
        sn >>= 1
    return steps


def test_an_index_outside_the_tree_is_refused():
    with pytest.raises(IndexError):
        merkle.inclusion_path(_leaves(3), 3)
    assert not merkle.verify_inclusion(_leaves(1)[0], 1, 1, [], _leaves(1)[0])
