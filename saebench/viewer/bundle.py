"""The viewer bundle: what ``saebench view`` shows, written once to a folder (format in ``docs/viewer.md``).

A bundle holds ``n`` images, the SAE codes of their ``T`` tokens (``h`` latents, stored sparse) and the
per-latent statistics of :mod:`saebench.viewer.stats`::

    manifest.json              format name, version, counts, token layout, class names, file list
    images/000000.png ...      one PNG per image (uint8, grey or RGB)
    labels.npy                 (n,) int64 class index of each image (-1 when the bundle has no labels)
    codes_indptr.npy           (n*T + 1,) int64   CSR over rows (image, token), image-major
    codes_latents.npy          (nnz,) int32       latent of each non-zero code, ascending within a row
    codes_values.npy           (nnz,) float32     its value
    latent_<stat>.npy          (h,) float64       frequency, token_frequency, mean_activation,
                                                  max_activation, label_entropy
    latent_class_counts.npy    (h, C) int64
    latent_top_images.npy      (h, top_n) int64   -1 marks an empty slot
    latent_top_values.npy      (h, top_n) float32

:func:`load_viewer_bundle` checks all of this and raises :class:`ViewerBundleError` naming what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse
import torch
from PIL import Image

from saebench.acts.tokens import TokenLayout
from saebench.metrics.patch_stats import ACTIVATION_THRESHOLD
from saebench.viewer.stats import LatentStats, LatentStatsAccumulator

FORMAT_NAME = "saebench-viewer-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IMAGE_DIR = "images"
STAT_NAMES = ("frequency", "token_frequency", "mean_activation", "max_activation", "label_entropy")
CHUNK_ELEMENTS = 1 << 24
"""Codes given whole (dense or sparse) are processed ``b*T*h`` elements at a time (64 MiB of float32)."""


class ViewerBundleError(ValueError):
    """A bundle folder is missing, from another format version, or inconsistent."""


def image_filename(index: int) -> str:
    """Name of image ``index`` inside ``images/``."""
    return f"{index:06d}.png"


def _array_specs(n: int, n_tokens: int, h: int, n_classes: int, top_n: int) -> dict[str, tuple]:
    """File name -> (shape with ``None`` for nnz, dtype) of every array in a bundle."""
    specs: dict[str, tuple] = {
        "labels.npy": ((n,), np.int64),
        "codes_indptr.npy": ((n * n_tokens + 1,), np.int64),
        "codes_latents.npy": ((None,), np.int32),
        "codes_values.npy": ((None,), np.float32),
        "latent_class_counts.npy": ((h, n_classes), np.int64),
        "latent_top_images.npy": ((h, top_n), np.int64),
        "latent_top_values.npy": ((h, top_n), np.float32),
    }
    specs.update({f"latent_{name}.npy": ((h,), np.float64) for name in STAT_NAMES})
    return specs


def _as_images(images: Any) -> np.ndarray:
    """``(n, H, W)`` or ``(n, H, W, 1|3)``, uint8 or float in [0, 1] -> uint8 ``(n, H, W[, 3])``."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] != 3):
        raise ValueError(
            f"images must be (n, H, W) or (n, H, W, 3) channels-last, got shape {array.shape}; "
            "permute channels-first tensors with .permute(0, 2, 3, 1)"
        )
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {array.dtype}")
    if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1 or np.isnan(array).any()):
        raise ValueError(
            f"float images must lie in [0, 1], got range [{np.nanmin(array)}, {np.nanmax(array)}]; "
            "undo the backbone's normalisation before writing a bundle"
        )
    return np.round(array * 255).astype(np.uint8)


def _code_chunks(codes: Any, n_images: int, n_tokens: int) -> Iterator[torch.Tensor]:
    """Yield float32 ``(b, T, h)`` chunks from a dense ``(n, T, h)`` array/tensor, a scipy sparse ``(n*T, h)``
    matrix, or an iterable of ``(b, T, h)`` chunks in image order."""
    if scipy.sparse.issparse(codes):
        matrix = scipy.sparse.csr_matrix(codes)
        if matrix.shape[0] != n_images * n_tokens:
            raise ValueError(
                f"sparse codes have {matrix.shape[0]} rows but {n_images} images x {n_tokens} tokens = "
                f"{n_images * n_tokens}; rows must be (image, token) pairs, image-major"
            )
        step = max(1, CHUNK_ELEMENTS // max(1, n_tokens * matrix.shape[1]))
        for start in range(0, n_images, step):
            stop = min(n_images, start + step)
            block = matrix[start * n_tokens : stop * n_tokens].toarray()
            yield torch.from_numpy(block).float().reshape(stop - start, n_tokens, matrix.shape[1])
        return
    if isinstance(codes, (torch.Tensor, np.ndarray)):
        tensor = torch.as_tensor(codes)
        if tensor.ndim != 3:
            raise ValueError(
                f"dense codes must be (n, T, h), got shape {tuple(tensor.shape)}; "
                "pass a scipy sparse (n*T, h) matrix for flattened codes"
            )
        step = max(1, CHUNK_ELEMENTS // max(1, tensor.shape[1] * tensor.shape[2]))
        yield from (tensor[start : start + step].float() for start in range(0, tensor.shape[0], step))
        return
    if not isinstance(codes, Iterable):
        raise TypeError(
            f"codes must be a (n, T, h) array/tensor, a scipy sparse (n*T, h) matrix or an iterable of "
            f"(b, T, h) chunks, got {type(codes).__name__}"
        )
    for chunk in codes:
        chunk = torch.as_tensor(chunk.detach().cpu() if isinstance(chunk, torch.Tensor) else chunk)
        if chunk.ndim != 3:
            raise ValueError(f"every codes chunk must be (b, T, h), got shape {tuple(chunk.shape)}")
        yield chunk.float()


def _labels(labels: Any, class_names: Sequence[str] | None, n_images: int) -> tuple[np.ndarray, list[str]]:
    """``(n,)`` int64 labels (all ``-1`` when None) and the class names (default ``"0", "1", ...``)."""
    if labels is None:
        if class_names:
            raise ValueError("class_names were given without labels; pass labels (n,) too")
        return np.full(n_images, -1, dtype=np.int64), []
    array = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if array.shape != (n_images,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"labels must be ({n_images},) integers, got shape {array.shape} dtype {array.dtype}"
        )
    names = list(class_names) if class_names is not None else [str(c) for c in range(int(array.max()) + 1)]
    if array.min() < 0 or array.max() >= len(names):
        raise ValueError(
            f"labels must lie in 0..{len(names) - 1} (one per class name), got [{array.min()}, {array.max()}]"
        )
    return array.astype(np.int64), names


def write_viewer_bundle(
    out_dir: str | Path,
    images: Any,
    codes: Any,
    layout: TokenLayout,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    top_n: int = 10,
    tau: float = ACTIVATION_THRESHOLD,
    title: str = "",
) -> Path:
    """Compute the viewer's per-latent statistics and write a bundle folder (see the module docstring).

    Args:
        out_dir: the bundle folder; created, and must not already hold a bundle.
        images: ``(n, H, W)`` or ``(n, H, W, 3)`` uint8, or float in ``[0, 1]`` (channels-last).
        codes: the SAE codes of every token: a dense ``(n, T, h)`` array/tensor, a scipy sparse ``(n*T, h)``
            matrix (rows image-major), or an iterable of ``(b, T, h)`` chunks in image order (e.g. a generator
            that encodes batch by batch, so ``n*T*h`` never sits in memory).
        layout: the token layout of ``T`` (``[cls, registers, patches]``); its grid draws the heatmaps.
        labels: ``(n,)`` class indices, or ``None``.
        class_names: ``C`` names, one per class index (default ``"0", "1", ...``).
        top_n: reference images kept per latent (PatchSAE's code keeps 10; its label entropy uses them).
        tau: threshold of the class-level counts (PatchSAE's 0.2).
        title: shown in the page header.

    Returns:
        The bundle folder.
    """
    out = Path(out_dir)
    if (out / MANIFEST).exists():
        raise FileExistsError(f"{out} already holds a viewer bundle; remove it or pick another folder")
    pixels = _as_images(images)
    n, n_tokens = pixels.shape[0], layout.n_tokens
    if n == 0:
        raise ValueError("images is empty; a bundle needs at least one image")
    label_array, names = _labels(labels, class_names, n)
    accumulator: LatentStatsAccumulator | None = None
    row_nnz: list[np.ndarray] = []
    code_latents: list[np.ndarray] = []
    code_values: list[np.ndarray] = []
    seen = 0
    for chunk in _code_chunks(codes, n, n_tokens):
        if chunk.shape[1] != n_tokens:
            raise ValueError(
                f"codes have {chunk.shape[1]} tokens per image but layout {layout} has {n_tokens}; "
                "pass the layout of the hook the SAE was trained on"
            )
        if accumulator is None:
            accumulator = LatentStatsAccumulator(chunk.shape[2], len(names), top_n, tau)
        elif chunk.shape[2] != accumulator.n_latents:
            raise ValueError(f"codes chunks disagree on h: {chunk.shape[2]} vs {accumulator.n_latents}")
        b = chunk.shape[0]
        if seen + b > n:
            raise ValueError(f"codes cover more than the {n} images given")
        chunk_labels = torch.from_numpy(label_array[seen : seen + b]) if names else None
        rows = chunk.reshape(b * n_tokens, -1)
        row_index, latent_index = torch.nonzero(rows, as_tuple=True)
        values = rows[row_index, latent_index]
        accumulator.update_sparse(b, n_tokens, row_index, latent_index, values, chunk_labels)
        row_nnz.append(torch.bincount(row_index, minlength=b * n_tokens).numpy())
        code_latents.append(latent_index.numpy().astype(np.int32))
        code_values.append(values.numpy())
        seen += b
    if accumulator is None or seen != n:
        raise ValueError(f"codes cover {seen} images but {n} images were given; they must match one to one")
    stats = accumulator.finish()
    indptr = np.zeros(n * n_tokens + 1, dtype=np.int64)
    np.cumsum(np.concatenate(row_nnz), out=indptr[1:])
    out.mkdir(parents=True, exist_ok=True)
    (out / IMAGE_DIR).mkdir(exist_ok=True)
    for index, image in enumerate(pixels):
        Image.fromarray(image).save(out / IMAGE_DIR / image_filename(index))
    arrays = {
        "labels.npy": label_array,
        "codes_indptr.npy": indptr,
        "codes_latents.npy": np.concatenate(code_latents),
        "codes_values.npy": np.concatenate(code_values),
        **_stat_arrays(stats),
    }
    for name, array in arrays.items():
        np.save(out / name, array)
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "title": title,
        "n_images": n,
        "n_latents": accumulator.n_latents,
        "top_n": top_n,
        "tau": tau,
        "layout": layout.to_dict(),
        "image_shape": list(pixels.shape[1:]),
        "class_names": names,
        "arrays": sorted(arrays),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _stat_arrays(stats: LatentStats) -> dict[str, np.ndarray]:
    arrays = {f"latent_{name}.npy": getattr(stats, name) for name in STAT_NAMES}
    arrays["latent_class_counts.npy"] = stats.class_counts
    arrays["latent_top_images.npy"] = stats.top_images
    arrays["latent_top_values.npy"] = stats.top_values
    return arrays


@dataclass(frozen=True)
class ViewerBundle:
    """A loaded, validated bundle. ``arrays`` maps file name -> array (the codes are memory-mapped)."""

    root: Path
    manifest: dict[str, Any]
    layout: TokenLayout
    arrays: dict[str, np.ndarray]

    @property
    def n_images(self) -> int:
        return int(self.manifest["n_images"])

    @property
    def n_latents(self) -> int:
        return int(self.manifest["n_latents"])

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    def image_path(self, index: int) -> Path:
        return self.root / IMAGE_DIR / image_filename(index)

    def token_codes(self, image: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """``T`` pairs ``(latents int32, values float32)``: the non-zero codes of each token of ``image``."""
        n_tokens = self.layout.n_tokens
        bounds = self.arrays["codes_indptr.npy"][image * n_tokens : (image + 1) * n_tokens + 1]
        latents, values = self.arrays["codes_latents.npy"], self.arrays["codes_values.npy"]
        return [(latents[a:b], values[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def latent_over_tokens(self, image: int, latent: int) -> np.ndarray:
        """``(T,)`` float32: the code of ``latent`` at every token of ``image`` (0 where it is silent)."""
        out = np.zeros(self.layout.n_tokens, dtype=np.float32)
        for token, (latents, values) in enumerate(self.token_codes(image)):
            hit = np.searchsorted(latents, latent)
            if hit < len(latents) and latents[hit] == latent:
                out[token] = values[hit]
        return out


_MANIFEST_KEYS = {
    "format": str,
    "version": int,
    "title": str,
    "n_images": int,
    "n_latents": int,
    "top_n": int,
    "tau": (int, float),
    "layout": dict,
    "image_shape": list,
    "class_names": list,
    "arrays": list,
}


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not root.is_dir():
        raise ViewerBundleError(
            f"{root} is not a folder; pass a bundle folder written by write_viewer_bundle"
        )
    if not path.is_file():
        raise ViewerBundleError(
            f"{root} has no {MANIFEST}, so it is not a viewer bundle; write one with "
            "saebench.viewer.write_viewer_bundle, or try `saebench view --demo`"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ViewerBundleError(f"{path} is not valid JSON ({err}); rewrite the bundle") from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ViewerBundleError(f"{path} is not a {FORMAT_NAME} manifest (its 'format' field is wrong)")
    if manifest.get("version") != FORMAT_VERSION:
        raise ViewerBundleError(
            f"{path} has format version {manifest.get('version')!r}; this saebench reads version "
            f"{FORMAT_VERSION}: rewrite the bundle with this saebench"
        )
    for key, kind in _MANIFEST_KEYS.items():
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            raise ViewerBundleError(f"{path}: field {key!r} is missing or not a {kind}; rewrite the bundle")
    return manifest


def _check_array(root: Path, name: str, array: np.ndarray, shape: tuple, dtype: type) -> None:
    expected = tuple(array.shape[0] if s is None else s for s in shape)
    if array.dtype != np.dtype(dtype) or array.shape != expected:
        raise ViewerBundleError(
            f"{root / name} is {array.dtype} {array.shape}, expected {np.dtype(dtype)} {expected} "
            "from the manifest; the bundle is inconsistent, rewrite it"
        )


def _check_contents(root: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    n, h = manifest["n_images"], manifest["n_latents"]
    indptr = arrays["codes_indptr.npy"]
    nnz = arrays["codes_latents.npy"].shape[0]
    if arrays["codes_values.npy"].shape[0] != nnz or indptr[0] != 0 or indptr[-1] != nnz:
        raise ViewerBundleError(f"{root}: codes_indptr does not cover codes_latents/codes_values; rewrite it")
    if np.any(np.diff(indptr) < 0):
        raise ViewerBundleError(f"{root}: codes_indptr decreases; the codes are corrupt, rewrite the bundle")
    latents = arrays["codes_latents.npy"]
    if nnz and (latents.min() < 0 or latents.max() >= h):
        raise ViewerBundleError(f"{root}: codes_latents has indices outside 0..{h - 1}")
    top = arrays["latent_top_images.npy"]
    if top.size and (top.min() < -1 or top.max() >= n):
        raise ViewerBundleError(f"{root}: latent_top_images has image indices outside -1..{n - 1}")
    labels = arrays["labels.npy"]
    n_classes = len(manifest["class_names"])
    if labels.size and (labels.min() < -1 or labels.max() >= n_classes):
        raise ViewerBundleError(f"{root}: labels.npy has classes outside -1..{n_classes - 1}")
    missing = [i for i in range(n) if not (root / IMAGE_DIR / image_filename(i)).is_file()]
    if missing:
        raise ViewerBundleError(
            f"{root / IMAGE_DIR} lacks {len(missing)} of {n} images (first: {image_filename(missing[0])})"
        )


def load_viewer_bundle(root: str | Path) -> ViewerBundle:
    """Open and validate a bundle folder; raises :class:`ViewerBundleError` saying what is wrong."""
    root = Path(root)
    manifest = _read_manifest(root)
    try:
        layout = TokenLayout.from_dict(manifest["layout"])
    except (KeyError, TypeError, ValueError) as err:
        raise ViewerBundleError(
            f"{root / MANIFEST}: bad token layout {manifest['layout']!r} ({err})"
        ) from err
    specs = _array_specs(
        manifest["n_images"],
        layout.n_tokens,
        manifest["n_latents"],
        len(manifest["class_names"]),
        manifest["top_n"],
    )
    if sorted(manifest["arrays"]) != sorted(specs):
        raise ViewerBundleError(
            f"{root / MANIFEST} lists arrays {sorted(manifest['arrays'])}, expected {sorted(specs)}"
        )
    arrays = {}
    for name, (shape, dtype) in specs.items():
        if not (root / name).is_file():
            raise ViewerBundleError(f"{root} lacks {name}; the bundle is incomplete, rewrite it")
        try:
            arrays[name] = np.load(root / name, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            raise ViewerBundleError(f"{root / name} is not a readable .npy file ({err})") from err
        _check_array(root, name, arrays[name], shape, dtype)
    _check_contents(root, manifest, arrays)
    return ViewerBundle(root=root, manifest=manifest, layout=layout, arrays=arrays)
