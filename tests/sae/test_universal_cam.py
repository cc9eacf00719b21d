"""Coordinated activation maximisation (saebench.viz.cam): the phase-only parameterisation keeps its magnitude
spectrum, the optimisation raises the concept for every model, and the PNG is written."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from saebench.sae.universal import UniversalSAE, UniversalSAEConfig
from saebench.viz.cam import (
    concept_activation,
    coordinated_activation_maximization,
    inverse_frequency_magnitude,
    phase_image,
    save_side_by_side,
)

SIZE = 16


def test_inverse_frequency_magnitude_by_hand():
    mag = inverse_frequency_magnitude(4)
    assert mag.shape == (4, 3)
    # DC is clamped to f = 1/4 -> 4; (fy, fx) = (0, 1/4) -> 4; (0, 1/2) -> 2; (1/4, 1/4) -> 1 / (sqrt(2)/4).
    assert mag[0, 0].item() == pytest.approx(4.0)
    assert mag[0, 1].item() == pytest.approx(4.0)
    assert mag[0, 2].item() == pytest.approx(2.0)
    assert mag[1, 1].item() == pytest.approx(4.0 / 2**0.5)


def test_phase_image_keeps_the_magnitude_spectrum():
    magnitude = inverse_frequency_magnitude(SIZE)
    phase = 2 * torch.pi * torch.rand(3, SIZE, SIZE // 2 + 1, generator=torch.Generator().manual_seed(0))
    image = phase_image(phase, magnitude)
    assert image.shape == (3, SIZE, SIZE)
    assert 0 < image.min() and image.max() < 1
    # Undo the sigmoid and look at the spectrum of one channel: away from DC (removed by the standardisation)
    # it is proportional to the fixed magnitude, except where irfft2 drops the imaginary part of the
    # self-conjugate Nyquist/zero-frequency bins; compare on the interior columns only.
    logit = torch.logit(image[0].double())
    spectrum = torch.fft.rfft2(logit).abs()[:, 1:-1]
    ratio = spectrum / magnitude[:, 1:-1].double()
    assert ratio.std() / ratio.mean() < 1e-4  # a constant ratio up to float32 round-off


def _toy_models():
    """Two tiny conv 'backbones' giving 4x4 = 16 tokens of widths 6 and 5."""
    torch.manual_seed(0)
    convs = {"a": nn.Conv2d(3, 6, 4, stride=4), "b": nn.Conv2d(3, 5, 4, stride=4)}

    def features(conv):
        return lambda img: conv(img).flatten(2).transpose(1, 2).reshape(-1, conv.out_channels)

    usae = UniversalSAE(UniversalSAEConfig({"a": 6, "b": 5}, 8, k=2))
    usae.train()
    with torch.no_grad():  # give BatchNorm running statistics of real feature scales
        for _ in range(5):
            imgs = torch.rand(8, 3, SIZE, SIZE)
            for name, conv in convs.items():
                usae.encode(name, features(conv)(imgs))
    return usae, {name: features(conv) for name, conv in convs.items()}


def test_cam_raises_the_concept_for_every_model(tmp_path):
    usae, fns = _toy_models()
    concept = 3
    start = phase_image(
        2 * torch.pi * torch.rand(3, SIZE, SIZE // 2 + 1, generator=torch.Generator().manual_seed(0)),
        inverse_frequency_magnitude(SIZE),
    )
    images = coordinated_activation_maximization(usae, fns, concept, size=SIZE, steps=60, lr=0.1, jitter=1)
    assert usae.training  # mode restored
    for name, fn in fns.items():
        assert images[name].shape == (3, SIZE, SIZE)
        before = concept_activation(usae, name, fn, start, concept)
        after = concept_activation(usae, name, fn, images[name], concept)
        assert after > before, name
    path = save_side_by_side(images, tmp_path / "cam.png", title=f"concept {concept}")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cam_bad_arguments_are_named():
    usae, fns = _toy_models()
    with pytest.raises(KeyError, match="lacks"):
        coordinated_activation_maximization(usae, {"z": fns["a"]}, 0, size=SIZE, steps=1)
    with pytest.raises(ValueError, match="concept must be"):
        coordinated_activation_maximization(usae, fns, 8, size=SIZE, steps=1)
