"""Load the MSAE authors' checkpoints (``WolodjaZ/MSAE`` ``sae.py`` ``load_model``; msae.md §3.1, §4.1) into
saebench SAEs.

Their format: a ``torch.save`` dict ``{"model": state_dict, "mean_center": mu, "scaling_factor": s,
"target_norm": t}`` in a file named
``{n_latents}_{n_inputs}_{activation}[_{arg}][_RW|_UW]_{tied}_{normalize}_{soft_cap}_{dataset...}.pth``
(``activation``: ``ReLU_<l1 digits>``, ``TopKReLU_<k>``, ``BatchTopKReLU_<k>``). The state dict holds
``pre_bias (n,)``, ``encoder (n, m)``, ``latent_bias (m,)``, ``decoder (m, n)`` (absent when tied) and the
``latents_activation_frequency`` statistics buffer (ignored).

Their forward pass is ours with ``b_dec = pre_bias``, ``W_enc = encoder``, ``b_enc = latent_bias``,
``W_dec = decoder`` and their standardisation ``(x - mu) * s`` as ``input_mean = mu``,
``input_scale = 1 / s``. An ``_RW`` / ``_UW`` file becomes a ``"matryoshka"`` SAE (the authors rebuild it as
``TopKReLU_k``; ours keeps the nesting levels and returns the same ``k`` from ``forward``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from saebench.sae.base import SAE, create_sae

__all__ = ["MSAECheckpointName", "parse_checkpoint_name", "load_msae_checkpoint"]

_ARCHITECTURES = {"ReLU": "relu", "TopKReLU": "topk", "BatchTopKReLU": "batchtopk"}


class MSAECheckpointName(NamedTuple):
    """What the authors' file name records."""

    n_latents: int
    n_inputs: int
    activation: str
    k: int | None
    weighting: str | None
    tied: bool
    normalize: bool
    soft_cap: float


def _flag(value: str, name: str, path: str) -> bool:
    if value not in ("True", "False"):
        raise ValueError(f"{path}: expected True/False for {name} in the file name, got {value!r}")
    return value == "True"


def parse_checkpoint_name(path: str | Path) -> MSAECheckpointName:
    """Parse the configuration from an authors' checkpoint file name (the rule of their ``load_model``)."""
    name = Path(path).name
    stem = name[: name.find(".pt")] if ".pt" in name else name
    parts = stem.split("_")
    try:
        n_latents, n_inputs, activation, argument = int(parts[0]), int(parts[1]), parts[2], parts[3]
        rest = parts[4:]
        weighting = rest.pop(0).lower() if rest[0] in ("RW", "UW") else None
        tied, normalize, soft_cap = rest[0], rest[1], float(rest[2])
    except (IndexError, ValueError) as error:
        raise ValueError(
            f"{name} is not an MSAE checkpoint name "
            "({n_latents}_{n_inputs}_{activation}_{arg}[_RW|_UW]_{tied}_{normalize}_{soft_cap}_...): "
            f"{error}"
        ) from None
    if activation not in _ARCHITECTURES:
        raise ValueError(
            f"{name}: unsupported activation {activation!r}; supported: {', '.join(_ARCHITECTURES)}"
        )
    k = None if activation == "ReLU" else int(argument)  # ReLU's argument is its L1 coefficient's digits
    return MSAECheckpointName(
        n_latents,
        n_inputs,
        activation,
        k,
        weighting,
        _flag(tied, "tied", name),
        _flag(normalize, "normalize", name),
        soft_cap,
    )


def _build(spec: MSAECheckpointName, path: Path) -> SAE:
    common: dict[str, Any] = {"d_in": spec.n_inputs, "n_latents": spec.n_latents, "tied": spec.tied}
    if spec.weighting is not None:
        if spec.activation != "TopKReLU":
            raise ValueError(f"{path.name}: an RW/UW (Matryoshka) checkpoint must use TopKReLU")
        return create_sae(
            "matryoshka", **common, weighting=spec.weighting, first_k=spec.k, soft_cap=spec.soft_cap
        )
    if spec.soft_cap != 0:
        raise ValueError(
            f"{path.name}: soft-capped {spec.activation} SAEs are not supported (only Matryoshka SAEs "
            "carry a soft cap in saebench)"
        )
    architecture = _ARCHITECTURES[spec.activation]
    if architecture == "relu":
        return create_sae("relu", **common)
    return create_sae(architecture, **common, k=spec.k)


def load_msae_checkpoint(path: str | Path) -> SAE:
    """Load an authors' ``.pth`` checkpoint as a saebench SAE (see the module docstring).

    The per-sample LayerNorm option (``normalize=True`` in the name) is not supported. Loading unpickles the
    file (``weights_only=False``, as the authors save Python scalars): only load files you trust.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MSAE checkpoint {path} does not exist")
    spec = parse_checkpoint_name(path)
    if spec.normalize:
        raise ValueError(f"{path.name}: checkpoints with per-sample input normalisation are not supported")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    missing = [key for key in ("model", "mean_center", "scaling_factor") if key not in saved]
    if missing:
        raise ValueError(f"{path.name} lacks {missing}; expected the dict that the MSAE train.py saves")
    state = saved["model"]
    sae = _build(spec, path)
    with torch.no_grad():
        sae.b_dec.copy_(state["pre_bias"])
        sae.b_enc.copy_(state["latent_bias"])
        if spec.tied:
            sae.W_dec.copy_(state["encoder"].T)
        else:
            sae.W_enc.copy_(state["encoder"])
            sae.W_dec.copy_(state["decoder"])
    scale = float(saved["scaling_factor"])
    sae.set_input_normalization(torch.as_tensor(saved["mean_center"], dtype=torch.float32), 1.0 / scale)
    return sae
