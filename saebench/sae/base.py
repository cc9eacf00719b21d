"""The SAE interface every architecture implements, the registry by name, and safetensors save/load.

Shapes: ``x`` is ``(..., d_in)``, codes are ``(..., n_latents)``. The decoder matrix ``W_dec`` is
``(n_latents, d_in)``: one dictionary atom per row. The encoder matrix ``W_enc`` is ``(d_in, n_latents)``.

Pipeline of one forward pass (every architecture)::

    x_n      = (x - input_mean) / input_scale              # saved input normalisation (identity by default)
    pre      = (x_n - b_dec if pre_encoder_bias else x_n) @ W_enc + b_enc
    codes    = activation(pre)                             # the architecture's choice: ReLU, TopK, ...
    x_hat_n  = codes @ W_dec + b_dec
    x_hat    = x_hat_n * input_scale + input_mean          # back to the input's space

The normalisation statistics are buffers, so they are part of the saved state and round-trip with the weights.
Losses that want the normalised space call :meth:`SAE.normalize` on both ``x`` and ``x_hat``.

Sparse path. An architecture whose codes are ReLU of a *selected* set of pre-activations (the TopK family)
implements :meth:`SAE.select_latents`; its forward pass then keeps the codes as ``SparseCodes`` and decodes
only the active rows of ``W_dec``, and the encoder backward touches only the selected entries
(:mod:`saebench.sae.sparse_decode`). The results equal the dense path's up to float summation order.
``forward`` still returns dense ``codes`` (built from the sparse ones, not saved for the backward);
:meth:`SAE.forward_sparse` returns a :class:`SparseSAEOutput` whose dense ``codes`` are built only when read;
:meth:`SAE.encode_sparse` skips the decoder and the dense codes. Set ``sae.sparse_decoding = False`` to run
the dense path (a runtime switch, not saved).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from saebench.sae.sparse_decode import Selection, SparseCodes, affine_select, sparse_decode

__all__ = [
    "SAEConfig",
    "SAEOutput",
    "SparseSAEOutput",
    "SAE",
    "register_sae",
    "affine",
    "available_architectures",
    "create_sae",
    "save_sae",
    "load_sae",
    "CheckpointArchitectureError",
]

DECODER_BIAS_INITS = ("zeros", "mean", "geometric_median")


class SAEOutput(NamedTuple):
    """What :meth:`SAE.forward` returns.

    pre_codes: ``(..., n_latents)`` encoder pre-activations (before the sparsifying activation).
    codes:     ``(..., n_latents)`` sparse codes.
    x_hat:     ``(..., d_in)`` reconstruction, in the input's (un-normalised) space.
    """

    pre_codes: torch.Tensor
    codes: torch.Tensor
    x_hat: torch.Tensor


class SparseSAEOutput(NamedTuple):
    """What :meth:`SAE.forward_sparse` returns: :class:`SAEOutput` with the codes kept sparse.

    pre_codes:    ``(..., n_latents)`` encoder pre-activations.
    sparse_codes: :class:`~saebench.sae.sparse_decode.SparseCodes` (differentiable values).
    x_hat:        ``(..., d_in)`` reconstruction, in the input's space.

    ``codes`` gives the dense ``(..., n_latents)`` codes, built from ``sparse_codes`` at each read (so a loss
    written against :class:`SAEOutput` still works, with gradients); code that only needs statistics reads
    ``sparse_codes`` and never builds them.
    """

    pre_codes: torch.Tensor
    sparse_codes: SparseCodes
    x_hat: torch.Tensor

    @property
    def codes(self) -> torch.Tensor:
        return self.sparse_codes.to_dense()


@dataclass(frozen=True)
class SAEConfig:
    """Options shared by every architecture. Architectures subclass this to add their own fields.

    d_in: input width. n_latents: dictionary size.
    normalize_decoder: keep decoder rows at unit L2 norm; the trainer removes the gradient component
        parallel to each row before the optimizer step and re-normalises after it.
    tied: the encoder is the transpose of the decoder (one shared parameter).
    encoder_init_from_decoder: initialise ``W_enc`` as a copy of ``W_dec.T`` (untied weights only).
    pre_encoder_bias: subtract ``b_dec`` from the (normalised) input before encoding.
    decoder_bias: learn a decoder bias ``b_dec``; without it ``b_dec`` is a zero buffer.
    """

    d_in: int
    n_latents: int
    normalize_decoder: bool = True
    tied: bool = False
    encoder_init_from_decoder: bool = True
    pre_encoder_bias: bool = True
    decoder_bias: bool = True

    def __post_init__(self) -> None:
        if self.d_in <= 0 or self.n_latents <= 0:
            raise ValueError(
                f"d_in and n_latents must be positive, got d_in={self.d_in}, n_latents={self.n_latents}"
            )
        if self.pre_encoder_bias and not self.decoder_bias:
            raise ValueError("pre_encoder_bias=True subtracts b_dec, so it needs decoder_bias=True")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_REGISTRY: dict[str, type[SAE]] = {}


def affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x @ weight + bias`` for ``x`` ``(..., m)``, ``weight`` ``(m, n)``: one fused ``addmm``, so the
    ``(..., n)`` result is written once instead of once for the product and again for the bias."""
    out = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight)
    return out.view(*x.shape[:-1], weight.shape[-1])


def register_sae(name: str):
    """Class decorator: register an :class:`SAE` subclass under ``name`` (sets ``cls.architecture``)."""

    def decorate(cls: type[SAE]) -> type[SAE]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"SAE architecture {name!r} is already registered by {_REGISTRY[name].__name__}")
        cls.architecture = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_architectures() -> list[str]:
    """Sorted names of every registered architecture."""
    _import_builtin_architectures()
    return sorted(_REGISTRY)


def sae_class(name: str) -> type[SAE]:
    """The registered class for ``name``; an unknown name is an error that lists the valid ones."""
    _import_builtin_architectures()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown SAE architecture {name!r}; registered architectures: {', '.join(sorted(_REGISTRY))}"
        ) from None


def create_sae(name: str, **config: Any) -> SAE:
    """Build a registered architecture from keyword config, e.g.
    ``create_sae("topk", d_in=64, n_latents=256, k=8)``."""
    cls = sae_class(name)
    return cls(cls.config_class(**config))


class SAE(nn.Module):
    """Base class: weights, normalisation, encode/decode, decoder constraint and initialisation helpers.

    Subclasses set ``config_class`` and implement :meth:`activation` (``pre_codes -> codes``).
    """

    config_class: ClassVar[type[SAEConfig]] = SAEConfig
    architecture: ClassVar[str] = "base"
    #: True when the SAE trains with the default step on plain ``(n, d_in)`` batches once built from its
    #: config alone; architectures that need more (orbit batches, candidate points) set it False.
    trains_from_config_alone: ClassVar[bool] = True

    def __init__(self, config: SAEConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config
        d, h = config.d_in, config.n_latents
        w_dec = torch.randn(h, d)
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        if not config.tied:
            if config.encoder_init_from_decoder:
                w_enc = w_dec.t().clone()
            else:
                bound = 1.0 / math.sqrt(d)
                w_enc = torch.empty(d, h).uniform_(-bound, bound)
            self.W_enc = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(h))
        if config.decoder_bias:
            self.b_dec = nn.Parameter(torch.zeros(d))
        else:
            self.register_buffer("b_dec", torch.zeros(d))
        self.register_buffer("input_mean", torch.zeros(d))
        self.register_buffer("input_scale", torch.ones(d))
        self.sparse_decoding = True  # use the sparse path where the architecture has one (see the module doc)

    # ------------------------------------------------------------------ weights
    @property
    def encoder_weight(self) -> torch.Tensor:
        """``(d_in, n_latents)``; the transpose of ``W_dec`` when tied."""
        return self.W_dec.t() if self.config.tied else self.W_enc

    @property
    def d_in(self) -> int:
        return self.config.d_in

    @property
    def n_latents(self) -> int:
        return self.config.n_latents

    # ------------------------------------------------------------- normalisation
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map inputs into the space the SAE works in: ``(x - input_mean) / input_scale``."""
        return (x - self.input_mean) / self.input_scale

    def denormalize(self, x_n: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        return x_n * self.input_scale + self.input_mean

    @torch.no_grad()
    def set_input_normalization(self, mean: torch.Tensor | float, scale: torch.Tensor | float) -> None:
        """Set the saved input statistics. Scalars broadcast (one mean/std for all dimensions, as USAE);
        ``(d_in,)`` tensors set per-dimension statistics."""
        mean_t = torch.as_tensor(mean, dtype=self.input_mean.dtype).expand(self.d_in)
        scale_t = torch.as_tensor(scale, dtype=self.input_scale.dtype).expand(self.d_in)
        if not torch.isfinite(mean_t).all() or not torch.isfinite(scale_t).all() or (scale_t <= 0).any():
            raise ValueError("input normalisation needs finite mean and finite, positive scale")
        self.input_mean.copy_(mean_t)
        self.input_scale.copy_(scale_t)

    # ------------------------------------------------------------ forward pieces
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` on a wrong trailing width or non-finite values."""
        if x.ndim == 0 or x.shape[-1] != self.d_in:
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape (..., {self.d_in}), got {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).sum().item()
            raise ValueError(f"input contains {bad} NaN/Inf value(s); clean the activations before encoding")

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., d_in) -> (..., n_latents)`` encoder pre-activations."""
        x_n = self.normalize(x)
        if self.config.pre_encoder_bias:
            x_n = x_n - self.b_dec
        return affine(x_n, self.encoder_weight, self.b_enc)

    def activation(self, pre_codes: torch.Tensor) -> torch.Tensor:
        """The sparsifying non-linearity, ``(..., n_latents) -> (..., n_latents)``; set by each subclass."""
        raise NotImplementedError

    def select_latents(self, pre_codes: torch.Tensor) -> Selection:
        """Sparse path (TopK family only): the entries of ``(n, n_latents)`` pre-activations that
        :meth:`activation` keeps, as a :data:`~saebench.sae.sparse_decode.Selection`; the codes are ReLU of
        the selected values and 0 elsewhere. Called once per forward pass, without gradient tracking. An
        architecture that does not override it has no sparse path."""
        raise NotImplementedError(f"{type(self).__name__} has no sparse selection; it runs the dense path")

    @property
    def uses_sparse_path(self) -> bool:
        """Whether forward passes take the sparse path: the architecture has one and ``sparse_decoding``."""
        return self.sparse_decoding and type(self).select_latents is not SAE.select_latents

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., d_in) -> (..., n_latents)`` sparse codes (no decoder work)."""
        self.check_input(x)
        return self.activation(self.pre_activation(x))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``(..., n_latents) -> (..., d_in)`` reconstruction in the input's space."""
        if codes.shape[-1] != self.n_latents:
            raise ValueError(f"codes must have shape (..., {self.n_latents}), got {tuple(codes.shape)}")
        return self.denormalize(affine(codes, self.W_dec, self.b_dec))

    def forward(self, x: torch.Tensor) -> SAEOutput:
        if self.uses_sparse_path:
            out = self.forward_sparse(x)
            return SAEOutput(pre_codes=out.pre_codes, codes=out.codes, x_hat=out.x_hat)
        self.check_input(x)
        pre = self.pre_activation(x)
        codes = self.activation(pre)
        return SAEOutput(pre_codes=pre, codes=codes, x_hat=self.decode(codes))

    # ------------------------------------------------------------------ sparse path
    def _encode_selected(self, x: torch.Tensor) -> tuple[torch.Tensor, SparseCodes]:
        """Sparse-path encoder: ``(..., d_in) -> (pre_codes (..., n_latents), SparseCodes)``."""
        batch_shape = tuple(x.shape[:-1])
        x_n = self.normalize(x).reshape(-1, self.d_in)
        centre = self.b_dec if self.config.pre_encoder_bias else None
        pre, kept, indices, offsets = affine_select(
            x_n, centre, self.encoder_weight, self.b_enc, self.select_latents
        )
        codes = SparseCodes(torch.relu(kept), indices, offsets, self.n_latents, batch_shape)
        return pre.view(*batch_shape, self.n_latents), codes

    def encode_sparse(self, x: torch.Tensor) -> SparseCodes:
        """``(..., d_in) ->`` :class:`~saebench.sae.sparse_decode.SparseCodes`: the codes of :meth:`encode`
        without the decoder and, on the sparse path, without a dense ``(..., n_latents)`` tensor (other
        architectures encode densely and keep the non-zeros)."""
        self.check_input(x)
        if self.uses_sparse_path:
            return self._encode_selected(x)[1]
        return SparseCodes.from_dense(self.activation(self.pre_activation(x)))

    def decode_sparse(self, codes: SparseCodes) -> torch.Tensor:
        """:class:`~saebench.sae.sparse_decode.SparseCodes` ``-> (..., d_in)``: :meth:`decode` touching only
        the active decoder rows (forward and backward). Inconsistent codes raise ``ValueError``."""
        if codes.n_latents != self.n_latents:
            raise ValueError(f"codes are over {codes.n_latents} latents, this SAE has {self.n_latents}")
        codes.check()
        return self._decode_active(codes)

    def _decode_active(self, codes: SparseCodes) -> torch.Tensor:
        x_hat_n = sparse_decode(codes, self.W_dec) + self.b_dec
        return self.denormalize(x_hat_n).view(*codes.batch_shape, self.d_in)

    def forward_sparse(self, x: torch.Tensor) -> SparseSAEOutput:
        """:meth:`forward` with sparse codes (:class:`SparseSAEOutput`); architectures without a sparse path
        run densely and keep the non-zeros."""
        self.check_input(x)
        if self.uses_sparse_path:
            pre, codes = self._encode_selected(x)
            return SparseSAEOutput(pre_codes=pre, sparse_codes=codes, x_hat=self._decode_active(codes))
        pre = self.pre_activation(x)
        codes = self.activation(pre)
        return SparseSAEOutput(pre, SparseCodes.from_dense(codes), self.decode(codes))

    # -------------------------------------------------------- decoder constraint
    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project out the gradient component parallel to each (unit-norm) decoder row.
        Call after ``backward`` and before ``optimizer.step``; no-op unless ``normalize_decoder``."""
        if not self.config.normalize_decoder or self.W_dec.grad is None:
            return
        w = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
        g = self.W_dec.grad
        g -= (g * w).sum(dim=1, keepdim=True) * w

    @torch.no_grad()
    def normalize_decoder_rows(self) -> None:
        """Rescale decoder rows to unit L2 norm. Call after ``optimizer.step``; no-op unless
        ``normalize_decoder``."""
        if self.config.normalize_decoder:
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    # ------------------------------------------------------------- initialisation
    @torch.no_grad()
    def init_decoder_bias(self, sample: torch.Tensor, method: str = "geometric_median") -> None:
        """Initialise ``b_dec`` from a sample ``(n, d_in)`` of inputs (in the normalised space).

        ``mean``: the coordinate-wise mean. ``geometric_median``: the point minimising the sum of Euclidean
        distances (Weiszfeld iterations), as in Bricken et al. 2023 and PatchSAE. ``zeros``: leave at zero.
        """
        if method not in DECODER_BIAS_INITS:
            raise ValueError(f"unknown decoder-bias init {method!r}; choose one of {DECODER_BIAS_INITS}")
        if not self.config.decoder_bias:
            raise ValueError("this SAE has decoder_bias=False, so there is no b_dec to initialise")
        if method == "zeros":
            self.b_dec.zero_()
            return
        self.check_input(sample)
        sample = self.normalize(sample.reshape(-1, self.d_in).to(self.b_dec))
        if method == "mean":
            self.b_dec.copy_(sample.mean(dim=0))
        else:
            from saebench.sae.init import geometric_median

            self.b_dec.copy_(geometric_median(sample))

    # ------------------------------------------------------------------ save/load
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """See :func:`save_sae`."""
        return save_sae(self, path, extra)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> SAE:
        """Load a checkpoint that must hold this class's architecture (see :func:`load_sae`)."""
        return load_sae(path, architecture=None if cls is SAE else cls.architecture, device=device)

    def extra_repr(self) -> str:
        return f"architecture={self.architecture!r}, config={self.config}"


# ---------------------------------------------------------------------- save / load
class CheckpointArchitectureError(ValueError):
    """Loading a checkpoint into an architecture other than the one it was saved from."""


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    # append rather than with_suffix: a stem such as "sae_lr1.5" keeps its dot
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_sae(sae: SAE, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``<path>.safetensors`` (every parameter and buffer, normalisation included) and
    ``<path>.json`` (architecture name, config, optional ``extra`` metadata). Returns the safetensors path."""
    from safetensors.torch import save_file

    weights_path, config_path = _paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in sae.state_dict().items()}
    save_file(state, str(weights_path))
    meta = {"architecture": sae.architecture, "config": sae.config.to_dict(), "extra": extra or {}}
    config_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return weights_path


def load_sae(path: str | Path, architecture: str | None = None, device: str | torch.device = "cpu") -> SAE:
    """Load a checkpoint written by :func:`save_sae`.

    If ``architecture`` is given and differs from the one saved, raise :class:`CheckpointArchitectureError`
    naming both. Missing files raise ``FileNotFoundError`` naming the file.
    """
    from safetensors.torch import load_file

    weights_path, config_path = _paths(path)
    for p in (weights_path, config_path):
        if not p.exists():
            raise FileNotFoundError(
                f"SAE checkpoint file {p} is missing (a checkpoint is a .safetensors + .json pair)"
            )
    meta = json.loads(config_path.read_text())
    saved = meta.get("architecture")
    if architecture is not None and architecture != saved:
        raise CheckpointArchitectureError(
            f"checkpoint {weights_path} holds a {saved!r} SAE, but a {architecture!r} SAE was requested"
        )
    cls = sae_class(saved)
    sae = cls(cls.config_class(**meta["config"]))
    state = load_file(str(weights_path), device=str(device))
    sae.load_state_dict(state, strict=True)
    return sae.to(device)


def _import_builtin_architectures() -> None:
    """Import the modules that register the built-in architectures (idempotent)."""
    import saebench.sae  # noqa: F401  (the package __init__ imports every architecture module)
