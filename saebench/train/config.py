"""``TrainConfig``: every option of one SAE training run, validated on construction.

The config is a frozen dataclass so a run is described by plain data: it round-trips through
:meth:`TrainConfig.to_dict` / :meth:`TrainConfig.from_dict` (JSON/YAML friendly) and is stored in every
checkpoint, where resuming checks that the options that change the numbers have not changed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TrainConfig", "OPTIMIZERS", "SCHEDULES", "AMP_DTYPES", "DECODER_BIAS_INITS"]

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "linear_decay")
AMP_DTYPES = (None, "bf16", "fp16")
DECODER_BIAS_INITS = (None, "zeros", "mean", "geometric_median")

# Fields that say where things go or how they are shown: they may differ between a run and its resumption.
BOOKKEEPING_FIELDS = frozenset(
    {"checkpoint_every", "checkpoint_dir", "keep_checkpoints", "resume", "log_path", "progress"}
)


@dataclass(frozen=True)
class TrainConfig:
    """Options of one training run. Steps count optimizer updates; one step consumes one global batch.

    Optimisation
        total_steps: number of optimizer steps (training also stops early when the batches run out).
        lr, optimizer ('adam' | 'adamw'), betas, eps, weight_decay: the torch.optim settings.
        warmup_steps: linear warm-up, the multiplier of step ``s`` (0-based) is ``(s + 1) / warmup_steps``
            (PatchSAE's "constant with warm-up" LambdaLR).
        schedule: after warm-up, 'constant' (multiplier 1), 'cosine' (half cosine from 1 down to
            ``min_lr_ratio``, reached after the last step) or 'linear_decay' (MSAE's ``LinearDecayLR``:
            constant for the first 80% of the steps, then linearly to 0); see :mod:`saebench.train.schedules`.
        grad_clip: clip the global gradient L2 norm to this value (``None``: no clipping).
    Initialisation
        b_dec_init: ``None`` (leave the SAE's decoder bias alone) or 'zeros' | 'mean' | 'geometric_median',
            computed from the first global batch via ``SAE.init_decoder_bias``.
    Dead latents (:mod:`saebench.train.auxiliary`)
        dead_window_tokens: a latent is dead once it has not fired on any of the last ``dead_window_tokens``
            tokens. Default 10M tokens, as Gao et al. 2024 §A.2 and their code (``dead_toks_threshold``).
        auxk_coefficient: weight of the AuxK loss (0 disables it; Gao et al. use 1/32).
        auxk_k: number of dead latents AuxK uses per token; ``None`` means ``d_in // 2`` (Gao et al. §A.2
            pick a power of two near d_model / 2). Always capped by the number of dead latents.
        ghost_grads: add the ghost-gradient term (Jermyn & Templeton 2024, as in PatchSAE's SAELens code).
    Precision and speed
        compile: run the default step's SAE forward through ``torch.compile`` (see ``docs/performance.md``);
            a custom ``step_fn`` compiles its own modules.
        amp_dtype: ``None`` (fp32), 'bf16' or 'fp16': ``torch.autocast`` around the forward and loss, with
            fp32 master weights; 'fp16' on CUDA also uses a ``GradScaler``.
    Persistence
        checkpoint_every: write a checkpoint every N steps (and always after the last step) into
            ``checkpoint_dir``; ``keep_checkpoints`` newest ones are kept (``None``: keep all).
        resume: continue from the latest checkpoint in ``checkpoint_dir`` (a fresh start if there is none).
        log_path: JSONL file, one line per step.
        seed: seeds torch, numpy and python ``random`` before the batches are iterated (a resumed run then
            restores the checkpoint's RNG states).
        progress: show a tqdm progress bar.
    """

    total_steps: int
    lr: float = 3e-4
    optimizer: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = None
    b_dec_init: str | None = None
    dead_window_tokens: int = 10_000_000
    auxk_coefficient: float = 0.0
    auxk_k: int | None = None
    ghost_grads: bool = False
    amp_dtype: str | None = None
    compile: bool = False
    checkpoint_every: int | None = None
    checkpoint_dir: str | None = None
    keep_checkpoints: int | None = 2
    resume: bool = False
    log_path: str | None = None
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("checkpoint_dir", "log_path"):
            value = getattr(self, name)
            if isinstance(value, Path):
                object.__setattr__(self, name, str(value))
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        self._validate()

    def _validate(self) -> None:
        _require_int(self, "total_steps", minimum=1)
        _require_int(self, "warmup_steps", minimum=0)
        _require_int(self, "dead_window_tokens", minimum=1)
        _require_int(self, "seed", minimum=None)
        for name in ("auxk_k", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) is not None:
                _require_int(self, name, minimum=1)
        _require_choice(self, "optimizer", OPTIMIZERS)
        _require_choice(self, "schedule", SCHEDULES)
        _require_choice(self, "amp_dtype", AMP_DTYPES)
        if not isinstance(self.compile, bool):
            raise TypeError(f"TrainConfig.compile must be True or False, got {self.compile!r}")
        _require_choice(self, "b_dec_init", DECODER_BIAS_INITS)
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if not self.eps > 0:
            raise ValueError(f"TrainConfig.eps must be > 0, got {self.eps}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("weight_decay", "auxk_coefficient"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps > self.total_steps:
            raise ValueError(
                f"TrainConfig.warmup_steps ({self.warmup_steps}) exceeds total_steps ({self.total_steps})"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip}")
        if (self.checkpoint_every is not None or self.resume) and self.checkpoint_dir is None:
            raise ValueError(
                "TrainConfig.checkpoint_every and resume need checkpoint_dir: set where checkpoints go"
            )

    # ---------------------------------------------------------------- conversion
    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (tuples become lists) for JSON/YAML and checkpoints."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error that lists the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; valid fields: {sorted(valid)}")
        return cls(**data)

    def differences_affecting_training(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields (other than bookkeeping ones) whose values differ: ``{name: (self value, other value)}``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if k not in BOOKKEEPING_FIELDS and mine[k] != theirs[k]}


def _require_int(config: TrainConfig, name: str, minimum: int | None) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"TrainConfig.{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"TrainConfig.{name} must be >= {minimum}, got {value}")


def _require_choice(config: TrainConfig, name: str, choices: tuple) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise ValueError(f"unknown TrainConfig.{name} {value!r}; choose one of {choices}")
