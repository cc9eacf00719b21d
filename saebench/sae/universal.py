"""Universal SAE (USAE): one shared sparse code for several models, each with its own encoder and dictionary.

Thasarathan et al. 2025, "Universal Sparse Autoencoders" (ICML), §3.1; the architecture is the one of the
authors' code (YorkUCVIL/UniversalSAE, vendored overcomplete ``TopKSAE`` with ``encoder_module: mlp_bn_1`` and
``dictionary_normalization: l2``; ``papers/usae.md`` §1.1):

- encoder of model ``i`` (``Psi_i``): ``pre = BatchNorm1d(Linear(d_i -> m)(x))`` (with bias; no separate
  ``b_pre``), ``codes = TopK_k(ReLU(pre))`` per row (per token), not BatchTopK;
- dictionary of model ``j``: a parameter ``(m, d_j)`` initialised with ``randn``; every read divides each row
  (atom) by ``||row||_2 + 1e-8``; the reconstruction is ``x_hat_j = codes @ D_j``, with no decoder bias.

Encoding ``x_i`` with ``Psi_i`` and decoding with ``D_j`` is the cross-model prediction the paper trains
(Eq. 3-4). Shapes: ``x_i`` is ``(n, d_i)``, codes ``(n, m)``. Inputs are expected already standardised with
each model's scalar mean and std (:func:`saebench.data.multimodel.scalar_standardize`).

The decode is the dense product: the USAE's auxiliary loss reads every positive pre-activation, so the
sparse path of :mod:`saebench.sae.sparse_decode` would save only the main term's decode (see
``reproductions/usae/NOTES.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

__all__ = [
    "UniversalSAEConfig",
    "UniversalSAE",
    "UniversalEncoder",
    "UniversalOutput",
    "DICTIONARY_EPS",
    "load_authors_checkpoints",
]

# overcomplete's ``DictionaryLayer`` l2 normalisation: row / (||row||_2 + 1e-8) (usae.md §1.1).
DICTIONARY_EPS = 1e-8


@dataclass(frozen=True)
class UniversalSAEConfig:
    """Configuration of a :class:`UniversalSAE`.

    model_dims: ``{model name: d_i}`` in the order models are listed (the authors' ``model_zoo`` order).
    n_latents: ``m``, the shared dictionary size (the paper: 8 x the largest width, 6144).
    k: active latents per row (the authors' code: 32).
    """

    model_dims: Mapping[str, int]
    n_latents: int
    k: int = field(kw_only=True)

    def __post_init__(self) -> None:
        dims = dict(self.model_dims)
        if not dims:
            raise ValueError("model_dims is empty; give at least one {model name: width} pair")
        for name, d in dims.items():
            if not isinstance(name, str) or isinstance(d, bool) or not isinstance(d, int) or d <= 0:
                raise ValueError(f"model_dims needs str names and positive int widths, got {name!r}: {d!r}")
        if isinstance(self.n_latents, bool) or not isinstance(self.n_latents, int) or self.n_latents <= 0:
            raise ValueError(f"n_latents must be a positive int, got {self.n_latents!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 0 < self.k <= self.n_latents:
            raise ValueError(f"k must be an int with 0 < k <= n_latents={self.n_latents}, got {self.k!r}")
        object.__setattr__(self, "model_dims", dims)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.model_dims)


class UniversalOutput(NamedTuple):
    """What :meth:`UniversalSAE.forward` returns for one source model.

    pre_codes: ``(n, m)`` BatchNorm output before the ReLU. codes: ``(n, m)`` TopK codes.
    x_hat: ``{model j: (n, d_j)}`` the code decoded by every dictionary (the source's own included).
    """

    pre_codes: torch.Tensor
    codes: torch.Tensor
    x_hat: dict[str, torch.Tensor]


class UniversalEncoder(nn.Module):
    """``Linear(d -> m) -> BatchNorm1d(m) -> ReLU -> TopK_k`` per row.

    ``(n, d) -> (pre (n, m), codes (n, m))``; ``pre`` is the BatchNorm output before the ReLU."""

    def __init__(self, d_in: int, n_latents: int, k: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, n_latents)
        self.norm = nn.BatchNorm1d(n_latents)
        self.k = k

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.norm(self.linear(x))
        positive = torch.relu(pre)
        kept, indices = positive.topk(self.k, dim=-1, sorted=False)
        return pre, torch.zeros_like(positive).scatter(-1, indices, kept)


class UniversalSAE(nn.Module):
    """M encoders and M unit-norm dictionaries around one shared code (module docstring).

    ``encoders[name]`` and ``dictionaries[name]`` hold model ``name``'s pair; :meth:`model_parameters` is
    the set one optimizer owns in the authors' code (one ``TopKSAE`` object per model).
    """

    def __init__(self, config: UniversalSAEConfig) -> None:
        super().__init__()
        self.config = config
        m = config.n_latents
        self.encoders = nn.ModuleDict(
            {name: UniversalEncoder(d, m, config.k) for name, d in config.model_dims.items()}
        )
        self.dictionaries = nn.ParameterDict(
            {name: nn.Parameter(torch.randn(m, d)) for name, d in config.model_dims.items()}
        )

    @property
    def models(self) -> tuple[str, ...]:
        return self.config.models

    def _check_model(self, name: str) -> None:
        if name not in self.config.model_dims:
            raise KeyError(f"unknown model {name!r}; this USAE has {list(self.models)}")

    def check_input(self, name: str, x: torch.Tensor) -> None:
        """Raise on an unknown model, a shape other than ``(n, d_name)`` or NaN/Inf values."""
        self._check_model(name)
        d = self.config.model_dims[name]
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(
                f"model {name!r} expects inputs of shape (n, {d}), got {tuple(x.shape)}; "
                "flatten token grids to rows with x.reshape(-1, d)"
            )
        if not torch.isfinite(x).all():
            raise ValueError(f"inputs of model {name!r} contain NaN/Inf; clean the activations first")

    def dictionary(self, name: str) -> torch.Tensor:
        """``(m, d_name)`` atoms of model ``name``, each row divided by its L2 norm + ``DICTIONARY_EPS``."""
        self._check_model(name)
        raw = self.dictionaries[name]
        return raw / (raw.norm(dim=1, keepdim=True) + DICTIONARY_EPS)

    def model_parameters(self, name: str) -> list[nn.Parameter]:
        """Encoder and dictionary parameters of model ``name`` (one optimizer's set in the authors' code)."""
        self._check_model(name)
        return [*self.encoders[name].parameters(), self.dictionaries[name]]

    def encode(self, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, d_name) -> (pre_codes (n, m), codes (n, m))`` with model ``name``'s encoder."""
        self.check_input(name, x)
        return self.encoders[name](x)

    def decode(self, name: str, codes: torch.Tensor) -> torch.Tensor:
        """``(n, m) -> (n, d_name)``: ``codes @ D_name`` (no bias)."""
        return codes @ self.dictionary(name)

    def forward(self, name: str, x: torch.Tensor) -> UniversalOutput:
        """Encode ``x`` with model ``name``'s encoder and decode the code into every model."""
        pre, codes = self.encode(name, x)
        return UniversalOutput(pre, codes, {target: self.decode(target, codes) for target in self.models})


# State-dict keys of one model's overcomplete ``TopKSAE`` with ``encoder_module: mlp_bn_1`` (``MLPEncoder``
# with one block: ``final_block = Sequential(Linear, BatchNorm1d)``) and its ``DictionaryLayer``
# (``_weights``). Read from overcomplete 0.3.0; the authors vendor v0.0.2, whose names we could not check
# (NOTES.md).
_AUTHORS_KEYS = {
    "linear.weight": "encoder.final_block.0.weight",
    "linear.bias": "encoder.final_block.0.bias",
    "norm.weight": "encoder.final_block.1.weight",
    "norm.bias": "encoder.final_block.1.bias",
    "norm.running_mean": "encoder.final_block.1.running_mean",
    "norm.running_var": "encoder.final_block.1.running_var",
    "norm.num_batches_tracked": "encoder.final_block.1.num_batches_tracked",
}
_AUTHORS_DICTIONARY_KEY = "dictionary._weights"


def _model_state(checkpoint: object, path: str) -> dict[str, torch.Tensor]:
    """The SAE state dict inside one authors' ``.pth`` file: the file's mapping itself, or its first value
    that is a mapping holding ``dictionary._weights`` (the file also holds the optimizer state, epoch, lr)."""
    if isinstance(checkpoint, Mapping):
        if _AUTHORS_DICTIONARY_KEY in checkpoint:
            return dict(checkpoint)
        for value in checkpoint.values():
            if isinstance(value, Mapping) and _AUTHORS_DICTIONARY_KEY in value:
                return dict(value)
    raise ValueError(
        f"{path}: no SAE state dict with {_AUTHORS_DICTIONARY_KEY!r} found; is it a USAE checkpoint?"
    )


def load_authors_checkpoints(paths: Mapping[str, str], k: int = 32) -> UniversalSAE:
    """A :class:`UniversalSAE` from the authors' per-model files
    ``{model: path to uni_<model>_checkpoint_<e>.pth}`` (usae.md §1.2 item 6, §5.2), in the given model order.
    Widths and ``m`` are read from the weights; ``k`` is the config's ``top_k`` (32). Missing files and
    missing keys are errors naming them."""
    states = {}
    for name, path in paths.items():
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"USAE checkpoint of model {name!r} not found: {path}") from None
        states[name] = _model_state(checkpoint, str(path))
    dims = {name: int(state[_AUTHORS_DICTIONARY_KEY].shape[1]) for name, state in states.items()}
    n_latents = {int(state[_AUTHORS_DICTIONARY_KEY].shape[0]) for state in states.values()}
    if len(n_latents) != 1:
        raise ValueError(f"the checkpoints disagree on the number of concepts: {sorted(n_latents)}")
    usae = UniversalSAE(UniversalSAEConfig(dims, n_latents.pop(), k=k))
    for name, state in states.items():
        missing = [key for key in (*_AUTHORS_KEYS.values(), _AUTHORS_DICTIONARY_KEY) if key not in state]
        if missing:
            raise ValueError(f"{paths[name]}: missing keys {missing}")
        usae.encoders[name].load_state_dict({ours: state[theirs] for ours, theirs in _AUTHORS_KEYS.items()})
        usae.dictionaries[name].data.copy_(state[_AUTHORS_DICTIONARY_KEY])
    return usae
