"""Token layouts, token selection and patch-grid resizing for cached activations.

A hook on a vision backbone yields a tensor ``(B, T, d)``: per image, ``T`` tokens of width ``d``. The
:class:`TokenLayout` says what those tokens are, always in the order ``[cls, registers, patches]``, with
the patches in row-major order (row 0 left to right, then row 1, ...). This is the order of timm and
open_clip ViTs (timm ``VisionTransformer._pos_embed`` puts the class token before the register tokens), and
the order in which a convolutional map ``(B, C, H, W)`` is flattened into ``H*W`` tokens.

Which tokens an SAE trains on differs per paper, so the selection is a recorded option:

- ``"all"``: every token. PatchSAE trains on all 197 tokens of CLIP ViT-B/16 (patchsae.md §1.1, §1.2).
- ``"cls"``: the class token(s) only.
- ``"registers"``: the register tokens only (Darcet et al.; e.g. timm ``*_reg4_dinov2``).
- ``"patches"``: the patch grid only. USAE drops the class token and trains on patch tokens (usae.md §1.6).
- ``"mean"``: the mean of the patch tokens, one row per image (of all tokens when the layout has no grid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

SELECTIONS: tuple[str, ...] = ("all", "cls", "registers", "patches", "mean")
"""Valid values of the ``selection`` argument of :func:`select_tokens`."""

POOLED_TOKEN_INDEX = -1
"""Token index recorded for a row that pools several tokens (selection ``"mean"``), not one token."""

_RESIZE_MODES = ("bilinear", "bicubic", "nearest", "nearest-exact", "area")
_ANTIALIAS_MODES = ("bilinear", "bicubic")


@dataclass(frozen=True)
class TokenLayout:
    """What the ``T`` tokens of one image are: ``[n_cls class tokens, n_registers registers, grid patches]``.

    ``grid`` is the patch grid ``(h, w)`` (``h*w`` tokens, row-major) or ``None`` when there are no patch
    tokens. A pooled embedding ``(B, d)`` is stored as one summary token in the class-token position:
    :meth:`pooled` is ``TokenLayout(n_cls=1)``, so selections ``"cls"``, ``"all"`` and ``"mean"`` return it.
    """

    n_cls: int = 0
    n_registers: int = 0
    grid: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for field_name in ("n_cls", "n_registers"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"TokenLayout.{field_name} must be an int >= 0, got {value!r}")
        if self.grid is not None:
            grid = tuple(self.grid)
            if len(grid) != 2 or not all(
                isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in grid
            ):
                raise ValueError(
                    f"TokenLayout.grid must be (h, w) with positive ints or None, got {self.grid!r}"
                )
            object.__setattr__(
                self, "grid", grid
            )  # lists from JSON become tuples: equal layouts compare equal
        if self.n_tokens == 0:
            raise ValueError("TokenLayout has no tokens: give n_cls, n_registers or a grid")

    @classmethod
    def pooled(cls) -> TokenLayout:
        """Layout of a pooled embedding: one summary token."""
        return cls(n_cls=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenLayout:
        """Inverse of :meth:`to_dict`."""
        grid = data.get("grid")
        return cls(
            n_cls=int(data["n_cls"]),
            n_registers=int(data["n_registers"]),
            grid=None if grid is None else (int(grid[0]), int(grid[1])),
        )

    @property
    def n_prefix(self) -> int:
        """Number of tokens before the patches (class tokens and registers)."""
        return self.n_cls + self.n_registers

    @property
    def n_patches(self) -> int:
        """Number of patch tokens (``h*w``; 0 without a grid)."""
        return 0 if self.grid is None else self.grid[0] * self.grid[1]

    @property
    def n_tokens(self) -> int:
        """Total number of tokens ``T``."""
        return self.n_prefix + self.n_patches

    def available_selections(self) -> tuple[str, ...]:
        """Selections that are meaningful for this layout (``"cls"`` only with a class token, ...)."""
        present = {
            "all": True,
            "cls": self.n_cls > 0,
            "registers": self.n_registers > 0,
            "patches": self.grid is not None,
            "mean": True,
        }
        return tuple(s for s in SELECTIONS if present[s])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (used in fingerprints and store metadata)."""
        return {
            "n_cls": self.n_cls,
            "n_registers": self.n_registers,
            "grid": None if self.grid is None else list(self.grid),
        }


def _check_selection(layout: TokenLayout, selection: str) -> None:
    if selection not in SELECTIONS:
        raise ValueError(f"unknown token selection {selection!r}; valid selections: {', '.join(SELECTIONS)}")
    if selection not in layout.available_selections():
        raise ValueError(
            f"token selection {selection!r} is empty for layout {layout}; "
            f"valid selections for this layout: {', '.join(layout.available_selections())}"
        )


def selected_token_indices(layout: TokenLayout, selection: str) -> list[int]:
    """Positions (in ``0..T-1``) of the tokens :func:`select_tokens` keeps, in output order.

    ``"mean"`` returns ``[POOLED_TOKEN_INDEX]``: its one row per image is not a single token.
    """
    _check_selection(layout, selection)
    if selection == "mean":
        return [POOLED_TOKEN_INDEX]
    start, stop = {
        "all": (0, layout.n_tokens),
        "cls": (0, layout.n_cls),
        "registers": (layout.n_cls, layout.n_prefix),
        "patches": (layout.n_prefix, layout.n_tokens),
    }[selection]
    return list(range(start, stop))


def selected_layout(layout: TokenLayout, selection: str) -> TokenLayout:
    """Layout of the output of ``select_tokens(acts, layout, selection)``."""
    _check_selection(layout, selection)
    if selection == "all":
        return layout
    if selection == "cls":
        return TokenLayout(n_cls=layout.n_cls)
    if selection == "registers":
        return TokenLayout(n_registers=layout.n_registers)
    if selection == "patches":
        return TokenLayout(grid=layout.grid)
    return TokenLayout.pooled()


def select_tokens(acts: Tensor, layout: TokenLayout, selection: str) -> Tensor:
    """Keep the tokens named by ``selection`` (one of :data:`SELECTIONS`).

    Args:
        acts: ``(B, T, d)`` activations laid out as ``layout`` (``T == layout.n_tokens``).
        layout: the token layout of ``acts``.
        selection: ``"all" | "cls" | "registers" | "patches" | "mean"`` (see the module docstring).

    Returns:
        ``(B, T', d)``: a view of ``acts`` for the slicing selections; for ``"mean"`` a new ``(B, 1, d)``
        tensor, the mean over patch tokens (over all tokens without a grid), accumulated in float32.
    """
    if acts.ndim != 3:
        raise ValueError(f"acts must be (B, T, d), got shape {tuple(acts.shape)}")
    if acts.shape[1] != layout.n_tokens:
        raise ValueError(
            f"acts has {acts.shape[1]} tokens but layout {layout} describes {layout.n_tokens}; "
            "pass the layout of the hook that produced these activations"
        )
    _check_selection(layout, selection)
    if selection == "mean":
        pooled_over = acts[:, layout.n_prefix :] if layout.grid is not None else acts
        return pooled_over.float().mean(dim=1, keepdim=True).to(acts.dtype)
    indices = selected_token_indices(layout, selection)
    return acts[:, indices[0] : indices[-1] + 1]


def resize_grid(
    patches: Tensor,
    src: tuple[int, int],
    dst: tuple[int, int],
    mode: str = "bilinear",
    antialias: bool = True,
) -> Tensor:
    """Resample a row-major patch grid to another grid size.

    USAE aligns DINOv2's 16×16 patch grid with the 14×14 grid of the ViT-B/16 models this way:
    ``F.interpolate(mode="bilinear", antialias=True)`` on the ``(n, d, 16, 16)`` grid (usae.md §1.6;
    authors' code ``interpolate_patch_tokens``). ``align_corners`` is False (PyTorch's default).

    Args:
        patches: ``(B, h*w, d)`` patch tokens only (select ``"patches"`` first), row-major.
        src: the source grid ``(h, w)``.
        dst: the target grid ``(h2, w2)``.
        mode: ``"bilinear" | "bicubic" | "nearest" | "nearest-exact" | "area"``.
        antialias: low-pass filter when downsampling; only for ``"bilinear"`` and ``"bicubic"``.

    Returns:
        ``(B, h2*w2, d)`` in the dtype of ``patches`` (interpolated in float32).
    """
    if patches.ndim != 3:
        raise ValueError(f"patches must be (B, h*w, d), got shape {tuple(patches.shape)}")
    (h, w), (h2, w2) = tuple(src), tuple(dst)
    if min(h, w, h2, w2) <= 0:
        raise ValueError(f"grid sizes must be positive, got src={src}, dst={dst}")
    if patches.shape[1] != h * w:
        raise ValueError(
            f"patches has {patches.shape[1]} tokens but src grid {h}x{w} has {h * w}; "
            "select only the patch tokens (selection 'patches') before resizing"
        )
    if mode not in _RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; valid modes: {', '.join(_RESIZE_MODES)}")
    if antialias and mode not in _ANTIALIAS_MODES:
        raise ValueError(
            f"antialias=True works only with modes {_ANTIALIAS_MODES}; pass antialias=False for {mode!r}"
        )
    batch, _, width = patches.shape
    image = patches.float().reshape(batch, h, w, width).permute(0, 3, 1, 2)
    interp_kwargs: dict[str, Any] = {"antialias": antialias}
    if mode in _ANTIALIAS_MODES:
        interp_kwargs["align_corners"] = False
    resized = F.interpolate(image, size=(h2, w2), mode=mode, **interp_kwargs)
    return resized.permute(0, 2, 3, 1).reshape(batch, h2 * w2, width).to(patches.dtype)
