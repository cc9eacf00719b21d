"""Run a backbone once per image for several cache passes over the same images.

:func:`saebench.acts.cache.cache_activations` writes several hooks in one pass only when they give the same
number of tokens per image; EfficientNet-Lite0's 7×7 map (49 tokens) and its pooled embedding (1 token) need
two passes, and at 224 px its forward pass is the mini tier's whole cost. :class:`SharedForward` wraps a
backbone for a fixed sequence of passes: while pass ``i`` runs, each forward also extracts the hooks of the
passes after ``i`` and keeps their rows per image; a later pass over the same image is served from that memo,
and the rows are dropped once served. Images are recognised by a digest of their preprocessed pixels, so an
image the memo has not seen (a resumed run whose earlier pass was already complete) is simply computed. Order
the passes with the most tokens per image first, so that only small hooks wait in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from saebench.acts.backbones.core import Backbone

__all__ = ["SharedForward"]


def _image_key(image: Tensor) -> bytes:
    """128-bit digest of one preprocessed image's float bytes."""
    return hashlib.blake2b(image.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest()


class SharedForward:
    """A :class:`~saebench.acts.backbones.Backbone` stand-in for a sequence of cache passes.

    Args:
        backbone: the backbone to run.
        passes: the hooks of each pass, in the order the passes will run.

    Everything but ``extract`` is the wrapped backbone's (name, hooks, preprocessing, fingerprint, ...), so
    the stores it feeds are the stores the backbone itself would feed.

    Attributes:
        hits: images served from the memo; misses: images run through the model.
    """

    def __init__(self, backbone: Backbone, passes: Sequence[Sequence[str]]):
        self.backbone = backbone
        self.passes = [frozenset(self._resolve(hooks)) for hooks in passes]
        self._memo: dict[bytes, dict[str, Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backbone, name)

    def _resolve(self, hooks: Sequence[str]) -> list[str]:
        return [self.backbone.resolve_hook(name).name for name in hooks]

    def _later_hooks(self, points: frozenset[str]) -> list[str]:
        """Hooks of the passes after the one asking for ``points``."""
        if points not in self.passes:
            raise ValueError(
                f"SharedForward was set up for passes {[sorted(p) for p in self.passes]}, "
                f"not {sorted(points)}"
            )
        later = self.passes[self.passes.index(points) + 1 :]
        return sorted(set().union(*later) - points)

    def extract(self, images: Tensor, hooks: Sequence[str]) -> dict[str, Tensor]:
        """Same contract as :meth:`Backbone.extract`."""
        points = dict(zip(hooks, self._resolve(hooks), strict=True))
        keys = [_image_key(image) for image in images]
        if all(key in self._memo and all(p in self._memo[key] for p in points.values()) for key in keys):
            return self._serve(keys, points)
        self.misses += len(keys)
        later = self._later_hooks(frozenset(points.values()))
        acts = self.backbone.extract(images, [*dict.fromkeys(points.values()), *later])
        if later:
            for row, key in enumerate(keys):
                self._memo.setdefault(key, {}).update({point: acts[point][row].clone() for point in later})
        return {name: acts[point] for name, point in points.items()}

    def _serve(self, keys: list[bytes], points: dict[str, str]) -> dict[str, Tensor]:
        self.hits += len(keys)
        served = {
            name: torch.stack([self._memo[key][point] for key in keys]) for name, point in points.items()
        }
        for key in set(keys):  # a duplicate image in the batch is served twice, then dropped once
            for point in points.values():
                self._memo[key].pop(point, None)
            if not self._memo[key]:
                del self._memo[key]
        return served

    @property
    def pending_images(self) -> int:
        """Images with rows still waiting in the memo."""
        return len(self._memo)
