"""The USAE CAM figure (``cam_figure.py``) on random zoo stand-ins and a tiny random USAE (seconds)."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import torch
from PIL import Image

from saebench.acts.backbones import load_backbone
from saebench.acts.backbones.preprocessing import Preprocessing
from saebench.acts.backbones.registry import get_spec
from saebench.metrics.universality_stream import UniversalityReport
from saebench.sae.universal import UniversalSAE, UniversalSAEConfig
from saebench.zoo.data import ZOO_PREPROCESSING

from .cam_figure import (
    backbone_feature_fn,
    backbone_inputs,
    cam_grid_figure,
    cam_images,
    grey,
    save_cam_figure,
    universal_concepts,
)

STATS = {"zoo-cnn": (0.5, 2.0), "zoo-vit": (-0.1, 1.5)}


@pytest.fixture(scope="module")
def backbones():
    torch.set_num_threads(1)
    return {"zoo-cnn": load_backbone("zoo-cnn", seed=0), "zoo-vit": load_backbone("zoo-vit", seed=0)}


@pytest.fixture(scope="module")
def feature_fns(backbones):
    hooks = {"zoo-cnn": "features", "zoo-vit": "final_norm"}
    return {
        name: backbone_feature_fn(b, hooks[name], "patches", STATS[name]) for name, b in backbones.items()
    }


@pytest.fixture(scope="module")
def usae():
    torch.manual_seed(0)
    return UniversalSAE(UniversalSAEConfig({"zoo-cnn": 64, "zoo-vit": 64}, 16, k=2)).eval()


def _grey_pil(size: int, seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    return Image.fromarray(pixels, mode="L")


def _as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).expand(1, 3, -1, -1)


def test_grey_is_pil_luma_copied_to_rgb():
    # one pixel (R, G, B) = (1, 0.5, 0): luma 0.299 * 1 + 0.587 * 0.5 + 0.114 * 0 = 0.5925 in every channel
    pixel = torch.tensor([1.0, 0.5, 0.0]).reshape(1, 3, 1, 1)
    assert torch.allclose(grey(pixel), torch.full((1, 3, 1, 1), 0.5925))


@pytest.mark.parametrize(
    ("preprocessing", "size"),
    [(ZOO_PREPROCESSING, 56), (get_spec("efficientnet-lite0").preprocessing, 28)],
    ids=["zoo-56-to-28", "efficientnet-28-to-224"],
)
def test_backbone_inputs_match_the_stores_pil_preprocessing(preprocessing, size):
    image = _grey_pil(size, seed=1)
    expected = preprocessing.transform()(image).unsqueeze(0)
    got = backbone_inputs(_as_tensor(image), preprocessing)
    assert got.shape == expected.shape
    # PIL rounds resized pixels to 8 bits and its filter weights are fixed-point: one 8-bit step (over the
    # smallest std), plus float32 rounding of the normalisation
    assert (got - expected).abs().max() <= (1 / 255) / min(preprocessing.std) + 1e-5


def test_backbone_inputs_refuse_a_resize_torch_lacks():
    with pytest.raises(ValueError, match="lanczos"):
        backbone_inputs(torch.rand(1, 3, 56, 56), Preprocessing(resize=(28, 28), interpolation="lanczos"))


def test_feature_fn_gives_the_stores_standardised_patch_tokens(backbones, feature_fns):
    image = torch.rand(1, 3, 28, 28)
    tokens = feature_fns["zoo-vit"](image)
    assert tokens.shape == (49, 64)  # 7 x 7 patches, the class token dropped
    acts = backbones["zoo-vit"].extract(backbone_inputs(image, ZOO_PREPROCESSING), ["final_norm"])
    mean, std = STATS["zoo-vit"]
    # scalar_standardize divides by std + 1e-5; float32 rounding only
    assert torch.allclose(tokens, (acts["final_norm"][0, 1:] - mean) / (std + 1e-5), atol=1e-5)
    assert feature_fns["zoo-cnn"](image).shape == (49, 64)


def test_feature_fn_carries_gradients_to_the_image(feature_fns):
    image = torch.rand(1, 3, 56, 56, requires_grad=True)
    feature_fns["zoo-cnn"](image).sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_efficientnet_feature_fn_gradient_matches_central_differences():
    # EfficientNet-Lite0's CPU input gradient is wrong in its default layout (see backbone_feature_fn);
    # random weights, float64: the central difference along the gradient must be the gradient's norm
    backbone = load_backbone("efficientnet-lite0", seed=0)
    backbone.model.double()
    features = backbone_feature_fn(backbone, "features", "patches", (0.0, 1.0))
    weights = torch.randn(49, 1280, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    image = torch.rand(1, 3, 56, 56, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    image.requires_grad_(True)
    (features(image) * weights).sum().backward()
    direction, eps = image.grad / image.grad.norm(), 1e-6
    with torch.no_grad():
        up, down = ((features(image + sign * eps * direction) * weights).sum() for sign in (1, -1))
    # float64, eps 1e-6: truncation and rounding are ~1e-6 relative (a wrong gradient was off by 2x)
    assert float(up - down) / (2 * eps) == pytest.approx(float(image.grad.norm()), rel=1e-4)


def test_the_objective_rises_with_the_steps(usae, feature_fns):
    start, start_objective = cam_images(usae, feature_fns, [3], steps=0, seed=0, image_size=28)
    _, optimised = cam_images(usae, feature_fns, [3], steps=25, seed=0, image_size=28, lr=0.1)
    for name in feature_fns:
        assert optimised[3][name] > start_objective[3][name], name
    assert all(image.shape == (3, 28, 28) for image in start[3].values())


def test_save_cam_figure_writes_one_panel_per_concept_and_model(usae, feature_fns, tmp_path):
    path = tmp_path / "figures" / "usae_cam.png"
    objectives = save_cam_figure(usae, feature_fns, [1, 4], path, steps=2, seed=0, image_size=28)
    assert list(objectives) == [1, 4] and all(list(v) == list(feature_fns) for v in objectives.values())
    assert matplotlib.image.imread(path).ndim == 3
    images = {k: {name: torch.rand(3, 8, 8) for name in feature_fns} for k in (1, 4, 9)}
    figure = cam_grid_figure(images, {k: dict.fromkeys(feature_fns, 0.0) for k in images})
    assert len(figure.axes) == 3 * 2


def test_save_cam_figure_refuses_no_concepts(usae, feature_fns, tmp_path):
    with pytest.raises(ValueError, match="concepts is empty"):
        save_cam_figure(usae, feature_fns, [], tmp_path / "x.png")


def test_universal_concepts_are_the_most_energetic_that_fire_in_every_model():
    # concepts 0, 2 and 3 fire in both models; aggregate energies 1 + 1 = 2, 4 + 0 = 4, 3 + 3 = 6, 1 + 4 = 5
    fires = torch.tensor([[2, 0, 5, 1], [1, 3, 4, 7]])
    energy = torch.tensor([[1.0, 4.0, 3.0, 1.0], [1.0, 0.0, 3.0, 4.0]])
    square = torch.zeros(2, 2)
    report = UniversalityReport(
        ("a", "b"), 0.1, square, square, square, fires, fires, torch.zeros(4), energy, 10, 1
    )
    assert universal_concepts(report, 2) == [2, 3]
    assert universal_concepts(report, 5) == [2, 3, 0]
