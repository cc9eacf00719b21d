"""Token layouts, token selection and patch-grid resizing (saebench.acts.tokens)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from saebench.acts.tokens import (
    POOLED_TOKEN_INDEX,
    SELECTIONS,
    TokenLayout,
    resize_grid,
    select_tokens,
    selected_layout,
    selected_token_indices,
)

# a DINOv2-with-registers-like layout: 1 CLS, 4 registers, a 2x3 patch grid -> 11 tokens
REG_LAYOUT = TokenLayout(n_cls=1, n_registers=4, grid=(2, 3))
SIGLIP_LIKE = TokenLayout(grid=(2, 2))  # patches only, no CLS


def positions(layout: TokenLayout, batch: int = 2, width: int = 3) -> torch.Tensor:
    """acts[b, t, :] = 100 * b + t: every value says which image and token it came from."""
    t = torch.arange(layout.n_tokens, dtype=torch.float32)
    b = torch.arange(batch, dtype=torch.float32)[:, None]
    return (100 * b + t)[:, :, None].expand(batch, layout.n_tokens, width).clone()


def test_layout_counts():
    assert (REG_LAYOUT.n_prefix, REG_LAYOUT.n_patches, REG_LAYOUT.n_tokens) == (5, 6, 11)
    assert TokenLayout.pooled().n_tokens == 1
    assert REG_LAYOUT.available_selections() == SELECTIONS
    assert SIGLIP_LIKE.available_selections() == ("all", "patches", "mean")
    assert TokenLayout.from_dict(REG_LAYOUT.to_dict()) == REG_LAYOUT
    # a layout read back from JSON has a list grid: it must still compare equal
    assert TokenLayout(n_cls=1, grid=[2, 3]) == TokenLayout(n_cls=1, grid=(2, 3))


@pytest.mark.parametrize(
    "kwargs", [{"n_cls": -1}, {"grid": (0, 3)}, {"grid": (2,)}, {}, {"n_registers": 1.5}]
)
def test_layout_rejects_bad_fields(kwargs):
    with pytest.raises(ValueError, match="TokenLayout"):
        TokenLayout(**kwargs)


@pytest.mark.parametrize(
    ("selection", "expected_tokens"),
    [("all", list(range(11))), ("cls", [0]), ("registers", [1, 2, 3, 4]), ("patches", [5, 6, 7, 8, 9, 10])],
)
def test_slicing_selections_keep_the_right_tokens(selection, expected_tokens):
    acts = positions(REG_LAYOUT)
    selected = select_tokens(acts, REG_LAYOUT, selection)
    expected = torch.tensor(expected_tokens, dtype=torch.float32)
    assert torch.equal(selected[0, :, 0], expected)
    assert torch.equal(selected[1, :, 2], expected + 100)  # image 1, last channel
    assert selected_token_indices(REG_LAYOUT, selection) == expected_tokens
    assert selected_layout(REG_LAYOUT, selection).n_tokens == len(expected_tokens)


def test_mean_averages_patch_tokens_only():
    acts = positions(REG_LAYOUT)
    pooled = select_tokens(acts, REG_LAYOUT, "mean")
    # patches are tokens 5..10: (5 + 6 + 7 + 8 + 9 + 10) / 6 = 7.5; image 1 adds 100
    assert pooled.shape == (2, 1, 3)
    assert torch.equal(pooled[:, 0, 0], torch.tensor([7.5, 107.5]))
    assert selected_token_indices(REG_LAYOUT, "mean") == [POOLED_TOKEN_INDEX]
    assert selected_layout(REG_LAYOUT, "mean") == TokenLayout.pooled()


def test_mean_of_a_pooled_layout_is_the_token_itself():
    acts = torch.randn(4, 1, 5)
    assert torch.equal(select_tokens(acts, TokenLayout.pooled(), "mean"), acts)
    assert torch.equal(select_tokens(acts, TokenLayout.pooled(), "cls"), acts)


def test_selection_errors_name_the_problem():
    with pytest.raises(ValueError, match="valid selections for this layout: all, patches, mean"):
        select_tokens(positions(SIGLIP_LIKE), SIGLIP_LIKE, "cls")
    with pytest.raises(ValueError, match="unknown token selection 'patch'; valid selections: all, cls"):
        select_tokens(positions(REG_LAYOUT), REG_LAYOUT, "patch")
    with pytest.raises(ValueError, match="acts has 10 tokens but layout .* describes 11"):
        select_tokens(torch.zeros(1, 10, 3), REG_LAYOUT, "all")
    with pytest.raises(ValueError, match=r"acts must be \(B, T, d\)"):
        select_tokens(torch.zeros(11, 3), REG_LAYOUT, "all")


def test_resize_to_the_same_grid_is_the_identity():
    patches = torch.randn(2, 16 * 16, 5)
    # same size: every output pixel samples one input pixel exactly; float32 round trip only
    torch.testing.assert_close(resize_grid(patches, (16, 16), (16, 16)), patches, rtol=0, atol=1e-6)


def test_bilinear_upsampling_by_hand():
    # grid [[0, 1], [2, 3]] -> 4x4, align_corners=False: output pixel i samples source coordinate
    # (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to 0, 0.25, 0.75, 1 -> weights along each axis
    # row values (from rows 0/2): 0, 0.5, 1.5, 2 ; column values (from cols 0/1): 0, 0.25, 0.75, 1
    patches = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 4, 1)
    resized = resize_grid(patches, (2, 2), (4, 4), antialias=False).reshape(4, 4)
    rows = torch.tensor([0.0, 0.5, 1.5, 2.0])[:, None]
    cols = torch.tensor([0.0, 0.25, 0.75, 1.0])[None, :]
    torch.testing.assert_close(resized, rows + cols)  # bilinear of a linear function is exact (fp32 rounding)


def test_usae_dinov2_resize_keeps_row_major_order():
    # USAE resizes DINOv2's 16x16 grid to 14x14, bilinear + antialias (usae.md §1.6). A grid whose value is
    # its row index must stay constant along each output row and increase down the rows; the token ordering
    # must match F.interpolate applied to the (B, d, h, w) image form.
    row_index = torch.arange(16.0)[:, None].expand(16, 16)
    col_index = torch.arange(16.0)[None, :].expand(16, 16)
    grid_image = torch.stack([row_index, col_index])[None]  # (1, 2, 16, 16): channel 0 = row, 1 = column
    patches = grid_image.flatten(2).transpose(1, 2)  # (1, 256, 2) row-major tokens
    resized = resize_grid(patches, (16, 16), (14, 14))
    assert resized.shape == (1, 196, 2)
    rows = resized[0, :, 0].reshape(14, 14)
    assert torch.allclose(rows, rows[:, :1].expand(14, 14), atol=1e-5)  # constant along each row
    assert bool((rows[1:, 0] > rows[:-1, 0]).all())
    reference = F.interpolate(grid_image, size=(14, 14), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(resized, reference.flatten(2).transpose(1, 2))


def test_resize_grid_errors():
    with pytest.raises(ValueError, match="src grid 16x16 has 256"):
        resize_grid(torch.zeros(1, 257, 3), (16, 16), (14, 14))
    with pytest.raises(ValueError, match="antialias=True works only with modes"):
        resize_grid(torch.zeros(1, 4, 3), (2, 2), (3, 3), mode="nearest")
    with pytest.raises(ValueError, match="unknown resize mode 'linear'"):
        resize_grid(torch.zeros(1, 4, 3), (2, 2), (3, 3), mode="linear")
    nearest = resize_grid(torch.zeros(1, 4, 3), (2, 2), (3, 3), mode="nearest", antialias=False)
    assert nearest.shape == (1, 9, 3)
