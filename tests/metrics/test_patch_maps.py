"""Patch activation maps, segmentation masks and mask IoU against hand-built examples."""

from __future__ import annotations

import pytest
import torch

from saebench.acts.tokens import TokenLayout
from saebench.metrics.patch_maps import (
    mask_iou,
    minmax_normalize_maps,
    patch_activation_maps,
    segmentation_masks,
)


def test_maps_take_patch_tokens_in_row_major_order():
    layout = TokenLayout(n_cls=1, n_registers=1, grid=(2, 3))  # 2 prefix tokens + 6 patches
    codes = torch.zeros(2, 8, 4)
    codes[:, :, 2] = torch.arange(8.0)  # latent 2 codes = token index
    codes[1, :, 3] = -torch.arange(8.0)
    maps = patch_activation_maps(codes, layout, [2, 3])
    assert maps.shape == (2, 2, 2, 3)
    # patches are tokens 2..7: row 0 = tokens 2, 3, 4; row 1 = tokens 5, 6, 7
    assert torch.equal(maps[0, 0], torch.tensor([[2.0, 3.0, 4.0], [5.0, 6.0, 7.0]]))
    assert torch.equal(maps[1, 1], -torch.tensor([[2.0, 3.0, 4.0], [5.0, 6.0, 7.0]]))


def test_maps_reject_extra_tokens_with_advice():
    layout = TokenLayout(n_cls=1, grid=(2, 2))
    with pytest.raises(ValueError, match="slice extra tokens"):
        patch_activation_maps(torch.zeros(1, 7, 3), layout, [0])
    with pytest.raises(ValueError, match="latent indices"):
        patch_activation_maps(torch.zeros(1, 5, 3), layout, [3])


def test_minmax_normalisation_and_constant_maps():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]])
    normalised = minmax_normalize_maps(maps)
    # (m - 1) / (5 - 1)
    assert torch.allclose(normalised[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(normalised[1], torch.zeros(2, 2))


def test_segmentation_masks_threshold_and_nearest_upsampling():
    maps = torch.tensor([[0.0, 2.0], [1.0, 4.0]])
    # normalised: [[0, 0.5], [0.25, 1]]; > 0.3 keeps the right column
    assert torch.equal(segmentation_masks(maps, threshold=0.3), torch.tensor([[False, True], [False, True]]))
    big = segmentation_masks(maps, size=(4, 4))  # default threshold 0: every non-minimal cell
    expected = torch.tensor([[False, True], [True, True]]).repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(big, expected)


def test_mask_iou_by_hand():
    pred = torch.tensor([[True, True], [False, False]])
    truth = torch.tensor([[True, False], [True, False]])
    # intersection 1 cell, union 3 cells
    assert mask_iou(pred, truth).item() == pytest.approx(1 / 3)
    empty = torch.zeros(2, 2, dtype=torch.bool)
    both = mask_iou(torch.stack([pred, empty]), torch.stack([pred, empty]))
    assert torch.equal(both, torch.tensor([1.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="bool masks"):
        mask_iou(pred.float(), truth.float())
