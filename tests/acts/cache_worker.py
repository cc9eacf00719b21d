"""Fixtures of the activation-store tests, and the cache script those tests spawn.

As a module (the tests load it by path): :func:`tiny_backbone`, a seeded random 2-block ViT-like model on
16x16 images (a class token and a 4x4 patch grid of width 16); :class:`GeneratedImages`, a deterministic
source of random RGB images with optional unreadable positions; :func:`synthetic_store`, a store written
directly whose rows carry their own global row number in column 0.

As a script (``python cache_worker.py --out DIR ...`` or under ``torchrun``): caches ``GeneratedImages``
through ``tiny_backbone`` at hook ``block.1``. ``--delay`` sleeps before each forward so that a test can kill
the process part-way; one intra-op thread keeps the arithmetic identical across processes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from saebench.acts.backbones import Backbone, HookPoint, Preprocessing, TokenLayout, backbone_from_module
from saebench.acts.cache import cache_activations
from saebench.acts.sources import Sample, UnreadableImageError
from saebench.acts.store import ShardLayout, Store, StoreWriter

WIDTH, GRID, IMAGE_SIZE = 16, (4, 4), 16


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class TinyViT(nn.Module):
    """4x4-pixel patches of a 16x16 image -> a 4x4 grid, a class token in front, then residual MLP blocks."""

    def __init__(self, width: int = WIDTH, depth: int = 2):
        super().__init__()
        self.patch_embed = nn.Conv2d(
            3, width, kernel_size=IMAGE_SIZE // GRID[0], stride=IMAGE_SIZE // GRID[0]
        )
        self.cls_token = nn.Parameter(torch.randn(1, 1, width))
        self.blocks = nn.ModuleList(_Block(width) for _ in range(depth))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(images).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return tokens


def tiny_backbone(seed: int = 0, delay: float = 0.0) -> Backbone:
    """A random :class:`TinyViT` (seeded) with hooks ``block.0`` and ``block.1``; ``delay`` seconds of sleep
    before every forward pass (a hook, so the weights and fingerprint do not change)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyViT()
    if delay:
        model.register_forward_pre_hook(lambda module, args: time.sleep(delay))
    layout = TokenLayout(n_cls=1, grid=GRID)
    hooks = {f"block.{i}": HookPoint(f"block.{i}", f"blocks.{i}", WIDTH, layout) for i in range(2)}
    preprocessing = Preprocessing(resize=(IMAGE_SIZE, IMAGE_SIZE), interpolation="bilinear")
    return backbone_from_module(model, hooks, preprocessing, name="tiny-vit")


class GeneratedImages:
    """``n`` random 20x20 RGB images, image ``i`` drawn from ``default_rng((seed, i))``, label ``i % 3``.

    unreadable: positions whose read raises ``UnreadableImageError``. order: the dataset index shown at each
    position (default: position ``p`` shows image ``p``).
    """

    name = "generated"

    def __init__(
        self, n: int, *, seed: int = 0, unreadable: Sequence[int] = (), order: Sequence[int] | None = None
    ):
        self.n, self.seed = n, seed
        self.unreadable = sorted(set(unreadable))
        self.order = list(order) if order is not None else None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, position: int) -> Sample:
        index = self.order[position] if self.order is not None else position
        if position in self.unreadable:
            raise UnreadableImageError(index, f"generated:{position}", "marked unreadable")
        pixels = np.random.default_rng((self.seed, index)).integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
        return Sample(image=Image.fromarray(pixels), label=index % 3, index=index, caption=None)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": self.n,
            "seed": self.seed,
            "unreadable": self.unreadable,
            "order": self.order,
        }


def synthetic_store(
    root: str | Path,
    *,
    n_images: int = 40,
    tokens_per_image: int = 5,
    d: int = 6,
    dtype: str = "float32",
    images_per_shard: int = 7,
    image_order: Sequence[int] | None = None,
    dataset: str = "synthetic",
    seed: int = 0,
    token_grid: tuple[int, int] | None = None,
) -> Store:
    """A complete store written shard by shard with :class:`StoreWriter`: column 0 of global row ``r`` is
    ``r`` (exact in float32), the other columns are seeded normal noise; image ``j`` has index
    ``image_order[j]``."""
    order = np.asarray(image_order if image_order is not None else range(n_images), dtype=np.int64)
    layout = ShardLayout(n_images, images_per_shard, batch_size=images_per_shard)
    spec = {
        "dataset": dataset,
        "n_images": n_images,
        "d": d,
        "dtype": dtype,
        "seed": seed,
        "tokens": tokens_per_image,
        "grid": token_grid,
    }
    writer = StoreWriter(
        root, spec, d=d, dtype=dtype, tokens_per_image=tokens_per_image, token_grid=token_grid, layout=layout
    )
    writer.prepare()
    rng = np.random.default_rng(seed)
    for shard in range(layout.n_shards):
        positions = np.asarray(layout.shard_positions(shard))
        rows = np.arange(positions[0] * tokens_per_image, (positions[-1] + 1) * tokens_per_image)
        acts = torch.from_numpy(rng.normal(size=(len(rows), d))).float()
        acts[:, 0] = torch.from_numpy(rows).float()
        index = np.stack(
            [
                np.repeat(order[positions], tokens_per_image),
                np.tile(np.arange(tokens_per_image), len(positions)),
                np.repeat(order[positions] % 4, tokens_per_image),
            ],
            axis=1,
        )
        writer.write_shard(shard, acts, index)
    return writer.finalize()


def main(argv: Sequence[str] | None = None) -> Store:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--shard-rows", type=int, default=48)
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--tokens", default="patches")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--unreadable", type=int, nargs="*", default=[])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    store = cache_activations(
        tiny_backbone(delay=args.delay),
        GeneratedImages(args.images, unreadable=args.unreadable),
        "block.1",
        tokens=args.tokens,
        out_root=args.out,
        batch_size=args.batch_size,
        dtype=args.dtype,
        shard_rows=args.shard_rows,
        progress=False,
    )
    print(store.path, flush=True)
    return store


if __name__ == "__main__":
    # Run main() from the module imported by name, so that TinyViT's qualified name (part of the backbone
    # fingerprint, hence of the store's hash) is "cache_worker.TinyViT" here as in the tests' import.
    import cache_worker

    cache_worker.main()
