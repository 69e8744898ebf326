"""Patch partition (the project convention: row-major k, vector = (C, P, P) block flattened)."""

import numpy as np
import pytest
import torch

from pipeline.patches import (
    assemble_patches,
    check_patch_size,
    extract_patches,
    full_from_patch_blocks,
    patch_blocks_from_full,
    patch_grid,
    patch_indices,
)


def _manual_patches(x, p):
    """Independent slicing definition of the convention."""
    n, c, h, w = x.shape
    out = []
    for r in range(h // p):
        for col in range(w // p):
            out.append(x[:, :, r * p : (r + 1) * p, col * p : (col + 1) * p].reshape(n, -1))
    return np.stack(out, axis=1)


@pytest.mark.parametrize(
    "shape,p", [((2, 3, 32, 32), 8), ((1, 3, 64, 64), 16), ((3, 1, 12, 8), 4), ((1, 2, 6, 6), 1)]
)
def test_extract_matches_slicing_and_roundtrips(shape, p):
    x = np.random.default_rng(0).standard_normal(shape)
    patches = extract_patches(x, p)
    np.testing.assert_array_equal(patches, _manual_patches(x, p))
    assert patches.shape == (shape[0], (shape[2] // p) * (shape[3] // p), shape[1] * p * p)
    np.testing.assert_array_equal(assemble_patches(patches, p, shape[1:]), x)


def test_torch_tensors_give_the_same_patches():
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    pt = extract_patches(torch.from_numpy(x), 8)
    assert isinstance(pt, torch.Tensor)
    np.testing.assert_array_equal(pt.numpy(), extract_patches(x, 8))
    np.testing.assert_array_equal(assemble_patches(pt, 8, (3, 16, 16)).numpy(), x)


def test_patch_vector_is_channel_major_then_row_then_col():
    x = np.zeros((1, 3, 16, 16))
    x[0, 2, 9, 10] = 1.0  # channel 2, row 9, col 10 -> patch (1, 1) = k 3, entry 2*64 + 1*8 + 2
    patches = extract_patches(x, 8)
    k, j = np.argwhere(patches[0] == 1.0)[0]
    assert (k, j) == (3, 2 * 64 + 1 * 8 + 2)


def test_grid_is_row_major():
    g = patch_grid(32, 64, 8)
    assert (g.rows, g.cols, g.num_patches) == (4, 8, 32)
    assert g.row_col(9) == (1, 1) and g.origin(9) == (8, 8)
    assert g.row_col(7) == (0, 7) and g.origin(31) == (24, 56)
    with pytest.raises(IndexError):
        g.row_col(32)


@pytest.mark.parametrize("p", [5, 7, 0, 64])
def test_patch_size_not_dividing_is_refused_with_the_fix(p):
    with pytest.raises(ValueError) as e:
        check_patch_size((3, 32, 32), p)
    msg = str(e.value)
    assert "patch" in msg and ("does not divide" in msg or "positive" in msg)
    if p in (5, 7, 64):
        assert "[1, 2, 4, 8, 16, 32]" in msg
    with pytest.raises(ValueError):
        extract_patches(np.zeros((1, 3, 32, 32)), p)


def test_patch_indices_and_block_conversions():
    shape, p = (2, 8, 8), 4
    idx = patch_indices(shape, p)
    assert idx.shape == (4, 32)
    assert np.array_equal(np.sort(idx.reshape(-1)), np.arange(128))  # a permutation of the pixels
    x = np.random.default_rng(2).standard_normal((1, *shape))
    np.testing.assert_array_equal(x.reshape(-1)[idx], extract_patches(x, p)[0])
    a = np.random.default_rng(3).standard_normal((128, 128))
    full = a @ a.T
    blocks = patch_blocks_from_full(full, shape, p)
    for k in range(4):
        np.testing.assert_array_equal(blocks[k], full[np.ix_(idx[k], idx[k])])
    bd = full_from_patch_blocks(blocks, shape, p)
    np.testing.assert_array_equal(patch_blocks_from_full(bd, shape, p), blocks)
    # Off-diagonal patch blocks are zero.
    assert np.count_nonzero(bd) == 4 * 32 * 32
