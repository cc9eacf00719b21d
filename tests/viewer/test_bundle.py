"""Viewer bundle: round trip of every input form, and the errors of bad input and damaged bundles."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import scipy.sparse
import torch
from PIL import Image

from saebench.acts.tokens import TokenLayout
from saebench.viewer import ViewerBundleError, load_viewer_bundle, write_viewer_bundle
from saebench.viewer.bundle import FORMAT_VERSION, MANIFEST, STAT_NAMES, image_filename
from saebench.viewer.demo import BACKGROUND_LATENT, DEAD_LATENT, OBJECT_LATENT
from saebench.viewer.stats import LatentStatsAccumulator


def dense_codes(bundle) -> np.ndarray:
    """Rebuild (n, T, h) codes from the bundle's CSR arrays."""
    n, n_tokens = bundle.n_images, bundle.layout.n_tokens
    out = np.zeros((n * n_tokens, bundle.n_latents), dtype=np.float32)
    indptr = bundle.arrays["codes_indptr.npy"]
    rows = np.repeat(np.arange(n * n_tokens), np.diff(indptr))
    out[rows, bundle.arrays["codes_latents.npy"]] = bundle.arrays["codes_values.npy"]
    return out.reshape(n, n_tokens, -1)


def test_round_trip_keeps_images_codes_labels_and_stats(world, bundle_dir):
    bundle = load_viewer_bundle(bundle_dir)
    assert bundle.n_images == len(world.images) and bundle.n_latents == world.codes.shape[2]
    assert bundle.layout == world.layout and bundle.class_names == list(world.class_names)
    np.testing.assert_array_equal(dense_codes(bundle), world.codes)
    np.testing.assert_array_equal(bundle.arrays["labels.npy"], world.labels)
    for i in (0, len(world.images) - 1):
        np.testing.assert_array_equal(np.asarray(Image.open(bundle.image_path(i))), world.images[i])
    acc = LatentStatsAccumulator(world.codes.shape[2], len(world.class_names), top_n=4)
    acc.update(torch.from_numpy(world.codes), torch.from_numpy(world.labels))
    expected = acc.finish()
    for name in STAT_NAMES:
        np.testing.assert_array_equal(bundle.arrays[f"latent_{name}.npy"], getattr(expected, name))
    np.testing.assert_array_equal(bundle.arrays["latent_top_images.npy"], expected.top_images)
    np.testing.assert_array_equal(bundle.arrays["latent_class_counts.npy"], expected.class_counts)


def test_latent_over_tokens_reads_one_latent_back(world, bundle_dir):
    bundle = load_viewer_bundle(bundle_dir)
    for image, latent in [
        (0, int(world.labels[0])),
        (5, OBJECT_LATENT),
        (7, BACKGROUND_LATENT),
        (7, DEAD_LATENT),
    ]:
        np.testing.assert_array_equal(bundle.latent_over_tokens(image, latent), world.codes[image, :, latent])


def test_sparse_chunked_and_float_inputs_write_the_same_bundle(world, bundle_dir, tmp_path):
    n, n_tokens, h = world.codes.shape
    sparse = scipy.sparse.csr_matrix(world.codes.reshape(n * n_tokens, h))
    chunks = (torch.from_numpy(world.codes[i : i + 5]) for i in range(0, n, 5))
    floats = world.images.astype(np.float32) / 255
    reference = load_viewer_bundle(bundle_dir)
    for name, codes, images in [("sparse", sparse, world.images), ("chunks", chunks, floats)]:
        bundle = load_viewer_bundle(
            write_viewer_bundle(
                tmp_path / name, images, codes, world.layout, world.labels, world.class_names, top_n=4
            )
        )
        for array in reference.arrays:
            np.testing.assert_array_equal(bundle.arrays[array], reference.arrays[array], err_msg=array)
        np.testing.assert_array_equal(np.asarray(Image.open(bundle.image_path(3))), world.images[3])


def test_unlabelled_grey_images_and_pooled_layout(tmp_path):
    images = np.zeros((3, 6, 5), dtype=np.uint8)
    codes = torch.tensor([[[0.5, 0.0]], [[0.0, 0.0]], [[0.2, 1.0]]])
    bundle = load_viewer_bundle(write_viewer_bundle(tmp_path / "b", images, codes, TokenLayout.pooled()))
    assert bundle.class_names == [] and bundle.manifest["image_shape"] == [6, 5]
    np.testing.assert_array_equal(bundle.arrays["labels.npy"], [-1, -1, -1])
    np.testing.assert_array_equal(bundle.arrays["latent_label_entropy.npy"], [-1.0, -1.0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": np.zeros((4, 3, 8, 8), dtype=np.uint8)}, "channels-last"),
        ({"images": np.full((4, 8, 8), 2.0)}, r"lie in \[0, 1\]"),
        ({"codes": np.zeros((4, 6, 3))}, "layout"),
        ({"codes": np.zeros((3, 5, 3))}, "3 images but 4 images were given"),
        ({"codes": np.zeros((20, 3))}, r"\(n, T, h\)"),
        ({"codes": scipy.sparse.csr_matrix((19, 3))}, "rows must be"),
        ({"labels": [0, 1, 2, 5]}, r"labels must lie in 0..2"),
        ({"labels": [0.0, 1.0, 0.0, 1.0]}, "integers"),
        ({"labels": None}, "class_names were given without labels"),
    ],
)
def test_bad_inputs_name_the_problem(tmp_path, change, message):
    args = {
        "images": np.zeros((4, 8, 8), dtype=np.uint8),
        "codes": np.zeros((4, 5, 3)),
        "layout": TokenLayout(n_cls=1, grid=(2, 2)),
        "labels": [0, 1, 2, 0],
        "class_names": ["a", "b", "c"],
    } | change
    with pytest.raises(ValueError, match=message):
        write_viewer_bundle(tmp_path / "b", **args)


def test_codes_of_the_wrong_type_are_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="iterable of"):
        write_viewer_bundle(tmp_path / "b", np.zeros((1, 4, 4), dtype=np.uint8), 7, TokenLayout.pooled())


def test_refuses_to_overwrite_a_bundle(world, bundle_dir):
    with pytest.raises(FileExistsError, match="already holds a viewer bundle"):
        write_viewer_bundle(bundle_dir, world.images, world.codes, world.layout)


def _copy(bundle_dir, tmp_path):
    return shutil.copytree(bundle_dir, tmp_path / "copy")


def _edit_manifest(root, **fields):
    manifest = json.loads((root / MANIFEST).read_text())
    (root / MANIFEST).write_text(json.dumps(manifest | fields))


def _save(root, name, array):
    np.save(root / name, array)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / MANIFEST).unlink(), "no manifest.json"),
        (lambda r: (r / MANIFEST).write_text("{"), "not valid JSON"),
        (lambda r: _edit_manifest(r, format="other"), "'format' field"),
        (lambda r: _edit_manifest(r, version=FORMAT_VERSION + 1), "format version 2"),
        (lambda r: _edit_manifest(r, n_images="24"), "'n_images'"),
        (lambda r: _edit_manifest(r, layout={"n_cls": 1}), "bad token layout"),
        (lambda r: (r / "latent_frequency.npy").unlink(), "lacks latent_frequency.npy"),
        (lambda r: _save(r, "latent_frequency.npy", np.zeros(3)), r"latent_frequency.npy is float64 \(3,\)"),
        (lambda r: _save(r, "labels.npy", np.zeros(24, dtype=np.int32)), "expected int64"),
        (lambda r: (r / "codes_values.npy").write_bytes(b"junk"), "not a readable .npy"),
        (lambda r: _save(r, "codes_latents.npy", np.load(r / "codes_latents.npy") + 100), "outside 0..8"),
        (
            lambda r: _save(r, "latent_top_images.npy", np.load(r / "latent_top_images.npy") + 50),
            "outside -1..23",
        ),
        (lambda r: _save(r, "labels.npy", np.full(24, 9, dtype=np.int64)), "classes outside -1..5"),
        (lambda r: (r / "images" / image_filename(7)).unlink(), "lacks 1 of 24 images"),
    ],
)
def test_damaged_bundles_fail_to_load_with_a_clear_error(bundle_dir, tmp_path, damage, message):
    root = _copy(bundle_dir, tmp_path)
    damage(root)
    with pytest.raises(ViewerBundleError, match=message):
        load_viewer_bundle(root)


def test_shuffled_indptr_is_caught(bundle_dir, tmp_path):
    root = _copy(bundle_dir, tmp_path)
    indptr = np.load(root / "codes_indptr.npy")
    indptr[5], indptr[6] = indptr[6] + 1, indptr[5]
    _save(root, "codes_indptr.npy", indptr)
    with pytest.raises(ViewerBundleError, match="decreases"):
        load_viewer_bundle(root)


def test_a_plain_folder_is_not_a_bundle(tmp_path):
    with pytest.raises(ViewerBundleError, match="saebench view --demo"):
        load_viewer_bundle(tmp_path)
    with pytest.raises(ViewerBundleError, match="is not a folder"):
        load_viewer_bundle(tmp_path / "missing")
