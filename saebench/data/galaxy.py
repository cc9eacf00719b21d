"""GalaxyMNIST (Walmsley et al.) as laid out by the ``galaxy_datasets`` package, and Zoobot activations of its
rotation orbits: the full tier of the equivariant-SAE reproduction (Erdogan & Lucic, arXiv:2511.09432; README
``03_galaxy_train.py --dataset galaxy-mnist --ae-architecture zoobot --hook 1 --input-dim 160``).

Data layout (what ``galaxy_datasets.shared.galaxy_mnist`` downloads and reads; the README installs that
package): a root folder holding ``galaxy_mnist_train_catalog.parquet`` and
``galaxy_mnist_test_catalog.parquet`` (one row per galaxy; columns ``filename`` and ``label``, the class
index 0-3) and the images, each at ``<root>/images/<filename>`` (the package's ``file_loc``), RGB JPEGs (64
x 64 px in GalaxyMNIST; the 224 px variant has the same layout). Class order :data:`GALAXY_MNIST_CLASSES` is
the GalaxyMNIST README's. The authors' saved activations (README: "already saved in the data folder") were
not available, so the full tier recomputes them (``reproductions/equivariant_sae/NOTES.md``).

Zoobot encoder and ``--hook 1``: which Zoobot encoder and layer the authors used is unknown
(``shared/papers/equivariant.md`` §4). Our reading: timm ``convnext_nano`` (a Zoobot encoder; stage widths
80, 160, 320, 640), hook 1 = the output of stage 1 (0-based), global-average-pooled to the README's input
dimension 160 (:func:`zoobot_orbit_activations`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from saebench.acts.backbones.weights import load_state_dict_file
from saebench.data.shapes import GROUP_ORDER, rotate_images

__all__ = [
    "GALAXY_MNIST_CLASSES",
    "CATALOG_NAMES",
    "load_galaxy_mnist",
    "write_galaxy_mnist",
    "StageOutput",
    "build_zoobot_encoder",
    "zoobot_orbit_activations",
]

GALAXY_MNIST_CLASSES = ("smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral")
CATALOG_NAMES = {"train": "galaxy_mnist_train_catalog.parquet", "test": "galaxy_mnist_test_catalog.parquet"}
ZOOBOT_ARCHITECTURE = "convnext_nano"


def load_galaxy_mnist(
    root: str | Path, split: str, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 3, H, W)`` uint8 images and ``(n,)`` int64 labels of the ``split`` ("train" or "test") catalog
    under ``root`` (layout in the module docstring), in catalog order; ``limit``: the first rows only."""
    import pandas as pd
    from PIL import Image

    if split not in CATALOG_NAMES:
        raise ValueError(f"split must be one of {sorted(CATALOG_NAMES)}, got {split!r}")
    root = Path(root)
    catalog_path = root / CATALOG_NAMES[split]
    if not catalog_path.is_file():
        raise FileNotFoundError(
            f"GalaxyMNIST catalog not found: {catalog_path}. Download GalaxyMNIST with galaxy_datasets "
            "(pip install galaxy_datasets; galaxy_datasets.pytorch GalaxyMNIST(root=..., download=True)) and "
            "point SAEBENCH_GALAXY_MNIST at that root"
        )
    catalog = pd.read_parquet(catalog_path)
    missing = {"filename", "label"} - set(catalog.columns)
    if missing:
        raise ValueError(f"{catalog_path} lacks column(s) {sorted(missing)}; it has {list(catalog.columns)}")
    if limit is not None:
        catalog = catalog.iloc[:limit]
    labels = catalog["label"].to_numpy()
    if len(labels) and not np.isin(labels, np.arange(len(GALAXY_MNIST_CLASSES))).all():
        raise ValueError(f"{catalog_path}: labels must be class indices 0-{len(GALAXY_MNIST_CLASSES) - 1}")
    images = []
    for name in catalog["filename"]:
        path = root / "images" / name
        if not path.is_file():
            raise FileNotFoundError(f"GalaxyMNIST image {path} (listed in {catalog_path.name}) is missing")
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("RGB")))
    if images and len({im.shape for im in images}) > 1:
        raise ValueError(f"{root}: images of different sizes {sorted({im.shape for im in images})}")
    stacked = np.stack(images) if images else np.zeros((0, 1, 1, 3), dtype=np.uint8)
    images_out = torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()
    return images_out, torch.tensor(np.asarray(labels, dtype=np.int64))


class StageOutput(nn.Module):
    """``(n, 3, S, S) -> (n, C, h, w)``: a timm ConvNeXt's stem and stages ``0..hook``, the output of stage
    ``hook`` (0-based)."""

    def __init__(self, convnext: nn.Module, hook: int):
        super().__init__()
        if not 0 <= hook < len(convnext.stages):
            raise ValueError(f"hook must be a stage index in [0, {len(convnext.stages) - 1}], got {hook}")
        self.stem, self.stages = convnext.stem, convnext.stages[: hook + 1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(images))


def write_galaxy_mnist(root: str | Path, split: str, images: torch.Tensor, labels: torch.Tensor) -> Path:
    """Write ``(n, 3, H, W)`` uint8 ``images`` and ``(n,)`` class ``labels`` in the layout
    :func:`load_galaxy_mnist` reads (JPEGs named ``<split>_<i>.jpg``, quality 95); return the catalog path.
    For tests, and for bringing other copies of GalaxyMNIST (e.g. the hdf5 files of ``galaxy_mnist``) into
    this layout."""
    import pandas as pd
    from PIL import Image

    if split not in CATALOG_NAMES:
        raise ValueError(f"split must be one of {sorted(CATALOG_NAMES)}, got {split!r}")
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"images must be (n, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = [f"{split}_{i}.jpg" for i in range(len(images))]
    for name, image in zip(names, images, strict=True):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / "images" / name, quality=95)
    path = root / CATALOG_NAMES[split]
    pd.DataFrame({"filename": names, "label": labels.numpy().astype(np.int64)}).to_parquet(path)
    return path


def build_zoobot_encoder(weights: str | Path | None, hook: int = 1) -> StageOutput:
    """timm ``convnext_nano`` cut after stage ``hook`` (:class:`StageOutput`), with the weights of a local
    Zoobot encoder file (``.safetensors`` or a torch state dict of the timm model, e.g. the file of
    ``hf_hub:mwalmsley/zoobot-encoder-convnext_nano``); ``weights=None`` keeps the random init (tests)."""
    import timm

    model = timm.create_model(ZOOBOT_ARCHITECTURE, pretrained=False, num_classes=0)
    if weights is not None:
        state = load_state_dict_file(weights)
        missing = sorted(set(model.state_dict()) - set(state))
        if missing:
            raise ValueError(
                f"{weights} is not a timm {ZOOBOT_ARCHITECTURE} state dict: it lacks {len(missing)} of the "
                f"encoder's tensors (first: {missing[:3]}); supply the Zoobot convnext_nano encoder weights"
            )
        model.load_state_dict({k: state[k] for k in model.state_dict()})
    return StageOutput(model, hook).eval()


@torch.no_grad()
def zoobot_orbit_activations(
    encoder: nn.Module, images: torch.Tensor, image_size: int = 224, batch_size: int = 64, device: str = "cpu"
) -> torch.Tensor:
    """``(n, 4, channels)`` activations of every C4 orbit member: image rotated ``p * 90°`` (``rot90``, as
    :func:`saebench.data.shapes.rotate_images`), scaled to [0, 1], resized to ``image_size`` (bilinear), run
    through ``encoder`` and global-average-pooled over its feature map. ``images``: ``(n, 3, H, W)`` uint8."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (n, 3, H, W), got {tuple(images.shape)}")
    encoder = encoder.to(device)
    out = []
    for chunk in images.split(batch_size):
        x = chunk.to(device).float() / 255.0
        if x.shape[-1] != image_size or x.shape[-2] != image_size:
            x = nn.functional.interpolate(
                x, size=(image_size, image_size), mode="bilinear", align_corners=False
            )
        members = torch.stack([rotate_images(x, p) for p in range(GROUP_ORDER)], dim=1)  # (b, 4, 3, S, S)
        features = encoder(members.flatten(0, 1))  # (b * 4, C, h, w)
        out.append(features.mean(dim=(-2, -1)).reshape(len(chunk), GROUP_ORDER, -1).cpu())
    return torch.cat(out)
