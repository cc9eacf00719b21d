"""Run a backbone once for several cache passes over the same images.

:func:`saebench.acts.cache.cache_activations` writes several hooks in one pass only when they give the same
number of tokens per image; EfficientNet-Lite0's 7×7 map (49 tokens) and its pooled embedding (1 token) need
two passes, and at 224 px its forward pass is the mini tier's whole cost. :class:`SharedForward` wraps a
backbone so that the first pass extracts every hook the later passes will ask for and keeps, per image, the
rows the current pass did not ask for; a later pass over the same image is served from that memo (and the
rows are dropped). Images are recognised by a digest of their preprocessed pixels, so an image the memo has
not seen is simply computed. Run the pass with the most tokens per image first: only the small hooks wait in
memory.
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
    """A :class:`~saebench.acts.backbones.Backbone` stand-in whose ``extract`` computes all of ``hooks``
    at once.

    Everything but ``extract`` is the wrapped backbone's (name, hooks, preprocessing, fingerprint, ...), so
    the stores it feeds are the stores the backbone itself would feed.

    Attributes:
        hits: images served from the memo; misses: images run through the model.
    """

    def __init__(self, backbone: Backbone, hooks: Sequence[str]):
        self.backbone = backbone
        self.all_hooks = [backbone.resolve_hook(name).name for name in hooks]
        self._memo: dict[bytes, dict[str, Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backbone, name)

    def extract(self, images: Tensor, hooks: Sequence[str]) -> dict[str, Tensor]:
        """Same contract as :meth:`Backbone.extract`."""
        points = {name: self.backbone.resolve_hook(name).name for name in hooks}
        keys = [_image_key(image) for image in images]
        if all(key in self._memo and all(p in self._memo[key] for p in points.values()) for key in keys):
            self.hits += len(keys)
            served = {
                name: torch.stack([self._memo[key][point] for key in keys]) for name, point in points.items()
            }
            for key in set(keys):  # a duplicate image in the batch is served twice, then dropped once
                for point in points.values():
                    del self._memo[key][point]
                if not self._memo[key]:
                    del self._memo[key]
            return served
        self.misses += len(keys)
        wanted = list(dict.fromkeys([*points.values(), *self.all_hooks]))
        acts = self.backbone.extract(images, wanted)
        kept = [point for point in wanted if point not in points.values()]
        if kept:
            for row, key in enumerate(keys):
                self._memo.setdefault(key, {}).update({point: acts[point][row].clone() for point in kept})
        return {name: acts[point] for name, point in points.items()}

    @property
    def pending_images(self) -> int:
        """Images with rows still waiting in the memo."""
        return len(self._memo)
