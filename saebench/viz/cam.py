"""Coordinated activation maximisation (CAM) for a Universal SAE (Thasarathan et al. 2025, §3.3, Eq. 7-8).

For one concept index ``k``, an input image is optimised **per model** so that model ``i``'s USAE code of
concept ``k`` is large; the images of all models, shown side by side, visualise what the shared concept means
to each. The paper follows MACO (Fel et al. 2023, "Unlocking feature visualization for deeper networks with
magnitude constrained optimization"): the image is parameterised by its Fourier **phase**, with a fixed
magnitude spectrum, so only the phase is optimised. The authors released no CAM code and give neither the
regulariser weight, the number of steps, the augmentations nor how token codes are pooled; our choices
(NOTES.md): a ``1 / f`` magnitude spectrum, the image is ``sigmoid`` of the standardised inverse FFT, a
random circular shift of up to ``jitter`` pixels per step as the only augmentation, and the objective is the
mean over tokens of ``pre_codes[:, k]`` (the BatchNorm output before ReLU and TopK: the code itself has zero
gradient on every token where the concept is not selected, which at the start is usually all of them).

``feature_fns[model]`` maps an image batch ``(1, 3, H, W)`` in ``[0, 1]`` to that model's standardised patch
tokens ``(T, d_model)`` (resize, normalise, backbone, CLS removal, grid resize and scalar standardisation are
the caller's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from saebench.sae.universal import UniversalSAE

__all__ = [
    "inverse_frequency_magnitude",
    "phase_image",
    "coordinated_activation_maximization",
    "concept_activation",
    "save_side_by_side",
]

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def inverse_frequency_magnitude(size: int, decay: float = 1.0) -> torch.Tensor:
    """``(size, size // 2 + 1)`` magnitude spectrum ``1 / max(f, 1 / size) ** decay`` over ``rfft2``
    frequencies ``f = sqrt(fy^2 + fx^2)`` (cycles per pixel): the ``1/f`` statistics of natural images."""
    fy = torch.fft.fftfreq(size).reshape(-1, 1)
    fx = torch.fft.rfftfreq(size).reshape(1, -1)
    return 1.0 / (fy.square() + fx.square()).sqrt().clamp_min(1.0 / size) ** decay


def phase_image(phase: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` image in ``(0, 1)`` from ``phase (3, H, W // 2 + 1)`` and the fixed ``magnitude``:
    ``sigmoid(standardise(irfft2(magnitude * exp(i phase))))`` per channel."""
    spatial = torch.fft.irfft2(torch.polar(magnitude.expand_as(phase), phase), s=(phase.shape[-2],) * 2)
    spatial = (spatial - spatial.mean(dim=(-2, -1), keepdim=True)) / (
        spatial.std(dim=(-2, -1), keepdim=True) + 1e-8
    )
    return torch.sigmoid(spatial)


def _concept_objective(usae: UniversalSAE, name: str, tokens: torch.Tensor, concept: int) -> torch.Tensor:
    pre, _ = usae.encode(name, tokens)
    return pre[:, concept].mean()


def coordinated_activation_maximization(
    usae: UniversalSAE,
    feature_fns: Mapping[str, FeatureFn],
    concept: int,
    *,
    size: int = 64,
    steps: int = 256,
    lr: float = 0.05,
    jitter: int = 4,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """``{model: (3, size, size)}`` images maximising concept ``concept`` of each model's encoder (eval mode,
    restored afterwards). Every model starts from the same random phase (``seed``) and is optimised alone with
    Adam on the phase only."""
    if set(feature_fns) - set(usae.models):
        raise KeyError(f"feature_fns has models {sorted(set(feature_fns) - set(usae.models))} the USAE lacks")
    if not 0 <= concept < usae.config.n_latents:
        raise ValueError(f"concept must be in [0, {usae.config.n_latents}), got {concept}")
    magnitude = inverse_frequency_magnitude(size)
    g = torch.Generator().manual_seed(seed)
    start = 2 * math.pi * torch.rand(3, size, size // 2 + 1, generator=g)
    was_training = usae.training
    usae.eval()
    images = {}
    try:
        for name, features in feature_fns.items():
            phase = start.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([phase], lr=lr)
            shifts = torch.randint(-jitter, jitter + 1, (steps, 2), generator=g).tolist()
            for dy, dx in shifts:
                image = phase_image(phase, magnitude).roll((dy, dx), dims=(-2, -1))
                loss = -_concept_objective(usae, name, features(image.unsqueeze(0)), concept)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            images[name] = phase_image(phase.detach(), magnitude)
    finally:
        usae.train(was_training)
    return images


def concept_activation(
    usae: UniversalSAE, name: str, feature_fn: FeatureFn, image: torch.Tensor, concept: int
) -> float:
    """The CAM objective of ``image (3, H, W)`` for model ``name`` (eval mode): mean over tokens of the
    concept's pre-activation."""
    was_training = usae.training
    usae.eval()
    try:
        with torch.no_grad():
            return float(_concept_objective(usae, name, feature_fn(image.unsqueeze(0)), concept))
    finally:
        usae.train(was_training)


def save_side_by_side(images: Mapping[str, torch.Tensor], path: str | Path, title: str = "") -> Path:
    """Write the ``(3, H, W)`` images in ``[0, 1]`` side by side, each titled by its model, as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(2.2 * len(images), 2.6))
    FigureCanvasAgg(figure)
    for index, (name, image) in enumerate(images.items()):
        axis = figure.add_subplot(1, len(images), index + 1)
        axis.imshow(image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
        axis.set_title(name)
        axis.axis("off")
    if title:
        figure.suptitle(title)
    figure.savefig(path, format="png", metadata={"Software": None})
    return path
