"""The training loop: ``train_sae(sae, batches, config)`` and the :class:`Trainer` underneath it.

One step on one global batch (a ``(n, d_in)`` tensor, or a dict of tensors for multi-model SAEs)::

    check the batch is finite                      -> NonFiniteTrainingError naming the step
    (first step of a fresh run) init b_dec         -> SAE.init_decoder_bias(first batch, config.b_dec_init)
    take this rank's rows                          -> distributed.shard_batch
    autocast(amp_dtype): loss, terms = step_fn(sae, rows, observe_codes)
    check the loss is finite                       -> NonFiniteTrainingError naming the step
    backward; all-reduce gradients (data parallel); unscale (fp16)
    sae.remove_parallel_decoder_grad(); clip the gradient norm; optimizer step
    sae.normalize_decoder_rows(); scheduler step; log one JSONL line

The batch -> loss computation is pluggable (``step_fn``): the default :class:`SAEStep` runs the SAE on a
tensor batch, applies a loss with the fixed signature ``loss_fn(x, out, sae) -> (scalar, dict)`` and adds
the AuxK / ghost-gradient terms; a multi-model SAE (USAE) passes its own step function with the same
signature as :class:`SAEStep`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from saebench.sae.base import SAE, SparseSAEOutput
from saebench.sae.sparse_decode import SparseCodes
from saebench.train import distributed
from saebench.train.auxiliary import DeadLatentTracker, auxk_loss, ghost_grads_loss
from saebench.train.checkpoint import (
    JsonlLog,
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    load_sae_weights,
    prune_checkpoints,
    read_trainer_state,
    remove_stale_temporaries,
    restore_rng_state,
    seed_everything,
    write_checkpoint,
)
from saebench.train.config import TrainConfig
from saebench.train.losses import LossFn, default_loss
from saebench.train.schedules import build_scheduler

__all__ = [
    "Batch",
    "ObserveCodes",
    "StepFn",
    "SAEStep",
    "NonFiniteTrainingError",
    "TrainResult",
    "Trainer",
    "train_sae",
    "run_trainers",
    "build_optimizer",
]

Batch = torch.Tensor | Mapping[str, torch.Tensor]
ObserveCodes = Callable[[torch.Tensor | SparseCodes], torch.Tensor]
"""Called by a step function with the ``(..., n_latents)`` codes of its batch (dense, or
:class:`~saebench.sae.sparse_decode.SparseCodes`); records firing (all ranks combined), L0 and the dead-latent
window, and returns the ``(n_latents,)`` bool dead mask."""
StepFn = Callable[[SAE, Batch, ObserveCodes], tuple[torch.Tensor, dict[str, float]]]
"""``step_fn(sae, rows, observe_codes) -> (scalar loss to minimise, {term name: float})``."""

# Keys every record gets from the trainer; a step function's terms with these names are not logged.
TRAINER_LOG_KEYS = frozenset({"step", "lr", "loss", "l0", "dead_fraction", "tokens", "grad_norm", "time_s"})
_AMP_DTYPES = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteTrainingError(FloatingPointError):
    """Training met a NaN/Inf batch or loss. ``step`` is the 1-based step that was not taken, ``source`` is
    ``'batch'`` or ``'loss'``; no optimizer step, checkpoint or log line was written for it."""

    def __init__(self, message: str, step: int, source: str):
        super().__init__(message)
        self.step = step
        self.source = source


@dataclass
class TrainResult:
    """What :func:`train_sae` returns: the trained ``sae``, the number of optimizer ``steps`` it has taken
    in total (a resumed run counts the restored ones), ``history`` (the log records of the steps run by this
    call, the same dicts as the JSONL lines) and the folder of the last ``checkpoint`` (``None`` if none)."""

    sae: SAE
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW with the config's lr, betas, eps and weight decay."""
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    return cls(parameters, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)


class SAEStep:
    """The default step function: one SAE on a ``(..., d_in)`` tensor batch.

    ``loss = loss_fn(x, out, sae)[0] + auxk_coefficient * AuxK + ghost term`` where AuxK and the ghost term
    (:mod:`saebench.train.auxiliary`) are computed in the SAE's normalised space on the latents that are
    dead after this batch is counted. Logged terms: the loss function's own, plus ``auxk`` (unscaled) and
    ``ghost_grads`` when enabled.

    On the sparse path (TopK family) ``out`` is a :class:`~saebench.sae.base.SparseSAEOutput`: the dead-latent
    tracking reads the sparse codes, and the dense ``out.codes`` is built only if the loss reads it. With
    ``config.compile`` the SAE's forward runs through ``torch.compile``.
    """

    def __init__(self, loss_fn: LossFn, config: TrainConfig):
        self.loss_fn = loss_fn
        self.auxk_coefficient = config.auxk_coefficient
        self.auxk_k = config.auxk_k
        self.ghost_grads = config.ghost_grads
        self.compile = config.compile
        self._compiled: tuple[SAE, bool, Callable] | None = None  # (sae, sparse path?, compiled forward)

    def _forward(self, sae: SAE) -> Callable[[torch.Tensor], Any]:
        forward = sae.forward_sparse if sae.uses_sparse_path else sae
        if not self.compile:
            return forward
        if self._compiled is None or self._compiled[:2] != (sae, sae.uses_sparse_path):
            self._compiled = (sae, sae.uses_sparse_path, torch.compile(forward))
        return self._compiled[2]

    def __call__(self, sae: SAE, batch: Batch, observe_codes: ObserveCodes) -> tuple[torch.Tensor, dict]:
        if isinstance(batch, Mapping):
            raise TypeError(
                f"the default step trains one SAE on (n, d_in) tensors, but the batch is a dict with keys "
                f"{sorted(batch)}; pass step_fn= for a multi-model SAE"
            )
        out = self._forward(sae)(batch)
        loss, terms = self.loss_fn(batch, out, sae)
        terms = dict(terms)
        dead_mask = observe_codes(out.sparse_codes if isinstance(out, SparseSAEOutput) else out.codes)
        if self.auxk_coefficient > 0 or self.ghost_grads:
            x = sae.normalize(batch).reshape(-1, sae.d_in)
            x_hat = sae.normalize(out.x_hat).reshape(-1, sae.d_in)
            pre_codes = out.pre_codes.reshape(-1, sae.n_latents)
            if self.auxk_coefficient > 0:
                k_aux = self.auxk_k if self.auxk_k is not None else max(1, sae.d_in // 2)
                aux = auxk_loss(x - x_hat, pre_codes, dead_mask, sae.W_dec, k_aux)
                loss = loss + self.auxk_coefficient * aux
                terms["auxk"] = aux.item()
            if self.ghost_grads:
                ghost = ghost_grads_loss(x, x_hat, pre_codes, dead_mask, sae.W_dec)
                loss = loss + ghost
                terms["ghost_grads"] = ghost.item()
        return loss, terms


class Trainer:
    """Optimizer, schedule, AMP, dead-latent tracking, checkpoints and log for one SAE.

    :meth:`fit` runs the whole loop; :meth:`train_step` takes one step on one global batch (the sweep drives
    several trainers with it). Under torchrun (``WORLD_SIZE > 1``) the process group is initialised from the
    environment and the trainer runs data-parallel.
    """

    def __init__(
        self,
        sae: SAE,
        config: TrainConfig,
        loss_fn: LossFn | None = None,
        step_fn: StepFn | None = None,
    ):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        if loss_fn is not None and step_fn is not None:
            raise ValueError("pass loss_fn or step_fn, not both (a step function computes its own loss)")
        self.sae = sae
        self.config = config
        self.context = distributed.init_from_env()
        self.device = next(sae.parameters()).device
        self.amp_dtype = _AMP_DTYPES[config.amp_dtype]
        self.params = [p for p in sae.parameters() if p.requires_grad]
        if self.amp_dtype is not None:
            not_fp32 = sorted({str(p.dtype) for p in self.params if p.dtype != torch.float32})
            if not_fp32:
                raise ValueError(
                    f"amp_dtype={config.amp_dtype!r} keeps fp32 master weights, but the SAE has {not_fp32} "
                    "parameters: call sae.float() first"
                )
        if step_fn is None:
            step_fn = SAEStep(loss_fn if loss_fn is not None else default_loss(sae), config)
        elif config.compile:
            raise ValueError(
                "TrainConfig.compile applies to the default step; a custom step_fn compiles its own modules "
                "(e.g. torch.compile(sae.forward_sparse)) -- set compile=False"
            )
        self.step_fn = step_fn
        self.optimizer = build_optimizer(self.params, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=config.amp_dtype == "fp16" and self.device.type == "cuda"
        )
        self.tracker = DeadLatentTracker(sae.n_latents, config.dead_window_tokens, self.device)
        self.step = 0
        self.batches_consumed = 0
        self.history: list[dict[str, Any]] = []
        self.last_checkpoint: Path | None = None
        self.restored_rng: dict[str, Any] | None = None
        self.restored_data_state: Any = None
        self._log: JsonlLog | None = None
        self._observed: dict[str, float] | None = None
        self._start_time = time.perf_counter()

    # ------------------------------------------------------------------ lifecycle
    def fit(self, batches: Iterable[Batch]) -> TrainResult:
        """Train on ``batches`` until ``total_steps`` or until they run out; resumes if ``config.resume``."""
        run_trainers([self], batches)
        return self.result()

    def result(self) -> TrainResult:
        return TrainResult(
            sae=self.sae, steps=self.step, history=self.history, checkpoint=self.last_checkpoint
        )

    def prepare(self) -> None:
        """Before the first batch: restore the latest checkpoint (``resume``) or check that a fresh run will
        not mix with old checkpoints; give every rank rank 0's weights; open the log."""
        config = self.config
        resumed = False
        if config.checkpoint_dir is not None:
            if self.context.is_main:
                remove_stale_temporaries(config.checkpoint_dir)
            latest = latest_checkpoint(config.checkpoint_dir)
            if latest is not None and not config.resume:
                raise FileExistsError(
                    f"{config.checkpoint_dir} already holds checkpoints (latest: {latest.name}); set "
                    "resume=True to continue that run, or use an empty checkpoint_dir"
                )
            if latest is not None:
                self.restore(latest)
                resumed = True
        if not resumed:
            distributed.broadcast_module(self.sae)
        self._log = JsonlLog(
            config.log_path, resume_at_step=self.step if resumed else None, enabled=self.context.is_main
        )
        self._start_time = time.perf_counter()

    def close(self) -> None:
        """Close the log (after a normal end or an error)."""
        if self._log is not None:
            self._log.close()

    def finish(self, data_state: Callable[[], Any]) -> None:
        """After the last batch: write a final checkpoint if the last step has none yet, and close the log."""
        if self.config.checkpoint_dir is not None and self.step > 0:
            if self.last_checkpoint != checkpoint_path(self.config.checkpoint_dir, self.step):
                self.save_checkpoint(data_state())
        self.close()

    # ----------------------------------------------------------------------- steps
    def train_step(self, batch: Batch) -> dict[str, Any]:
        """One optimizer step on one global batch; returns (and logs) the step's record."""
        step = self.step + 1
        self._check_batch_finite(batch, step)
        if self.step == 0 and self.config.b_dec_init is not None:
            self._init_decoder_bias(batch)
        n_rows = distributed.batch_rows(batch)
        rows = distributed.shard_batch(batch, self.context.rank, self.context.world_size)
        weight = distributed.batch_rows(rows) / n_rows
        rows = _to_device(rows, self.device)

        self.sae.train()
        self.optimizer.zero_grad(set_to_none=True)
        self._observed = None
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss, terms = self.step_fn(self.sae, rows, self._observe_codes)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise TypeError(f"the step function must return a scalar loss tensor, got {loss!r}")
        values = self._mean_over_ranks(loss, terms, weight)
        if not math.isfinite(values["loss"]):
            raise NonFiniteTrainingError(
                f"step {step}: the loss is not finite ({values}); training stopped before the optimizer "
                f"step. {self._last_checkpoint_note()}",
                step=step,
                source="loss",
            )
        self.scaler.scale(loss.float()).backward()
        if self.context.enabled:
            distributed.all_reduce_gradients(self.params, weight)
        self.scaler.unscale_(self.optimizer)
        self.sae.remove_parallel_decoder_grad()
        grad_norm = None
        if self.config.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip).item()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.sae.normalize_decoder_rows()
        if self.context.enabled:
            distributed.broadcast_module(self.sae, buffers_only=True)
        self.scheduler.step()
        self.step = step
        self.batches_consumed += 1
        return self._record(step, lr, values, grad_norm)

    def _observe_codes(self, codes: torch.Tensor | SparseCodes) -> torch.Tensor:
        if self._observed is not None:
            raise RuntimeError(
                "observe_codes was called twice in one step; call it once with the step's codes"
            )
        h = self.sae.n_latents
        width = codes.n_latents if isinstance(codes, SparseCodes) else codes.shape[-1]
        if width != h:
            raise ValueError(f"observe_codes expects codes over {h} latents, got {width}")
        with torch.no_grad():
            if isinstance(codes, SparseCodes):
                per_latent, n_rows = codes.firing_counts(), codes.n_rows
            else:
                nonzero = codes.detach().reshape(-1, h) != 0
                per_latent, n_rows = nonzero.sum(dim=0), nonzero.shape[0]
            counts = torch.cat(
                [
                    per_latent,
                    torch.tensor([n_rows], device=per_latent.device),
                    per_latent.sum().view(1),
                ]
            ).long()
            distributed.all_reduce_sum(counts)
            n_tokens, n_nonzero = counts[h:].tolist()
            self.tracker.update(counts[:h] > 0, n_tokens)
            self._observed = {
                "l0": n_nonzero / max(n_tokens, 1),
                "dead_fraction": self.tracker.dead_fraction(),
                "tokens": self.tracker.tokens_seen,
            }
            return self.tracker.dead_mask

    def _mean_over_ranks(self, loss: torch.Tensor, terms: dict[str, Any], weight: float) -> dict[str, float]:
        """The loss and terms averaged over ranks, weighted by each rank's share of the rows. Terms named
        like a trainer log key are dropped (the trainer's value wins)."""
        names = ["loss", *sorted(set(terms) - TRAINER_LOG_KEYS)]
        if not self.context.enabled:
            return {"loss": loss.item(), **{k: float(terms[k]) for k in names[1:]}}
        stacked = torch.tensor(
            [loss.item(), *(float(terms[k]) for k in names[1:])], dtype=torch.float64, device=self.device
        )
        distributed.all_reduce_sum(stacked.mul_(weight))
        return dict(zip(names, stacked.tolist(), strict=True))

    def _record(
        self, step: int, lr: float, values: dict[str, float], grad_norm: float | None
    ) -> dict[str, Any]:
        record: dict[str, Any] = {"step": step, "lr": lr, **values}
        if self._observed is not None:
            record.update(self._observed)
        if grad_norm is not None:
            record["grad_norm"] = grad_norm
        record["time_s"] = time.perf_counter() - self._start_time
        self.history.append(record)
        if self._log is not None:
            self._log.write(record)
        return record

    def _check_batch_finite(self, batch: Batch, step: int) -> None:
        items = batch.items() if isinstance(batch, Mapping) else [(None, batch)]
        for key, tensor in items:
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(
                    f"step {step}: batches must be tensors (or dicts of tensors), got {type(tensor)}"
                )
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                where = "the batch" if key is None else f"the batch's tensor {key!r}"
                bad = int((~torch.isfinite(tensor)).sum())
                raise NonFiniteTrainingError(
                    f"step {step}: {where} contains {bad} NaN/Inf value(s); training stopped before this "
                    f"step. {self._last_checkpoint_note()}",
                    step=step,
                    source="batch",
                )

    def _last_checkpoint_note(self) -> str:
        if self.last_checkpoint is None:
            return "No checkpoint has been written."
        return f"The last good checkpoint, {self.last_checkpoint}, is untouched."

    def _init_decoder_bias(self, batch: Batch) -> None:
        if isinstance(batch, Mapping):
            raise TypeError(
                "b_dec_init needs tensor batches; a multi-model step function initialises its own biases"
            )
        self.sae.init_decoder_bias(batch.to(self.device), self.config.b_dec_init)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_if_due(self, data_state: Callable[[], Any]) -> None:
        every = self.config.checkpoint_every
        if every is not None and self.step % every == 0:
            self.save_checkpoint(data_state())

    def save_checkpoint(self, data_state: Any = None) -> Path:
        """Write a checkpoint of the current step (rank 0 writes; every rank must call it)."""
        rng_states = distributed.all_gather_objects(capture_rng_state())
        path = checkpoint_path(self.config.checkpoint_dir, self.step)
        if self.context.is_main:
            state = {
                "step": self.step,
                "batches_consumed": self.batches_consumed,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "grad_scaler": self.scaler.state_dict(),
                "dead_tracker": self.tracker.state_dict(),
                "rng": rng_states,
                "data_state": data_state,
                "config": self.config.to_dict(),
                "world_size": self.context.world_size,
            }
            write_checkpoint(self.config.checkpoint_dir, self.step, self.sae, state)
            prune_checkpoints(self.config.checkpoint_dir, self.config.keep_checkpoints)
        distributed.barrier()
        self.last_checkpoint = path
        return path

    def restore(self, path: str | Path) -> None:
        """Load checkpoint ``path`` into this trainer (weights, optimizer, scheduler, scaler, tracker, step).
        The RNG states and data position are kept in ``restored_rng`` / ``restored_data_state`` /
        ``batches_consumed`` for :func:`run_trainers`, which applies them after positioning the data."""
        state = read_trainer_state(path)
        saved = TrainConfig.from_dict(state["config"])
        changed = saved.differences_affecting_training(self.config)
        if changed:
            raise ValueError(
                f"cannot resume from {path}: these options differ from the checkpoint's "
                f"(checkpoint, now): {changed}; restore them or start a fresh run in another checkpoint_dir"
            )
        load_sae_weights(path, self.sae)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["grad_scaler"]:  # empty when the saving run had no active scaler (fp32, bf16, fp16 on CPU)
            self.scaler.load_state_dict(state["grad_scaler"])
        self.tracker.load_state_dict(state["dead_tracker"])
        self.step = int(state["step"])
        self.batches_consumed = int(state["batches_consumed"])
        self.restored_data_state = state["data_state"]
        rng_states = state["rng"]
        if len(rng_states) != self.context.world_size:
            warnings.warn(
                f"checkpoint {path} was written by {len(rng_states)} rank(s), this run has "
                f"{self.context.world_size}; every rank restores rank 0's RNG state",
                stacklevel=2,
            )
            self.restored_rng = rng_states[0]
        else:
            self.restored_rng = rng_states[self.context.rank]
        self.last_checkpoint = Path(path)


# ---------------------------------------------------------------------------- driver
def _to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, Mapping):
        return {key: value.to(device, non_blocking=True) for key, value in batch.items()}
    return batch.to(device, non_blocking=True)


def _is_stateful(batches: Any) -> bool:
    return callable(getattr(batches, "state_dict", None)) and callable(
        getattr(batches, "load_state_dict", None)
    )


def _position(batches: Iterable[Batch], consumed: int, data_state: Any) -> Iterator[Batch]:
    """An iterator over ``batches`` that starts after the first ``consumed`` ones: through the iterable's own
    ``load_state_dict`` when it has one and a state was saved, else by drawing and dropping them."""
    if consumed and data_state is not None and _is_stateful(batches):
        batches.load_state_dict(data_state)
        return iter(batches)
    iterator = iter(batches)
    for index in range(consumed):
        try:
            next(iterator)
        except StopIteration:
            raise ValueError(
                f"cannot resume: the batches ran out after {index} of the {consumed} consumed before the "
                "checkpoint; pass the same data as the interrupted run"
            ) from None
    return iterator


def run_trainers(trainers: Sequence[Trainer], batches: Iterable[Batch]) -> None:
    """Drive ``trainers`` through one pass over ``batches``: each global batch is drawn once and given to
    every trainer that still has steps to take.

    Resuming: each trainer restores its own latest checkpoint; the data restarts at the smallest position
    among them, and a trainer whose checkpoint is further along skips the batches it has already trained on.

    RNG: every run first seeds everything with the first trainer's ``seed`` and only then calls
    ``iter(batches)`` (a ``DataLoader`` draws its shuffling seed there); a resumed run then skips the
    consumed batches (replaying the original stream) and restores the RNG states saved by a trainer at the
    smallest position.
    """
    if isinstance(batches, torch.Tensor):
        raise TypeError(
            "batches must be an iterable of (n, d_in) batches, not one tensor: pass data.split(batch_size)"
        )
    if not trainers:
        raise ValueError("run_trainers needs at least one trainer")

    def data_state() -> Any:
        return batches.state_dict() if _is_stateful(batches) else None

    try:
        for trainer in trainers:
            trainer.prepare()
        position = min(t.batches_consumed for t in trainers)
        leader = next(t for t in trainers if t.batches_consumed == position)
        seed_everything(trainers[0].config.seed)  # before iter(): loaders draw their shuffle seed there
        iterator = _position(batches, position, leader.restored_data_state)
        if leader.restored_rng is not None:
            restore_rng_state(leader.restored_rng)
        show = any(t.config.progress for t in trainers) and trainers[0].context.is_main
        total = max(t.config.total_steps for t in trainers)
        with tqdm(total=total, initial=position, disable=not show, desc="train", dynamic_ncols=True) as bar:
            while any(t.step < t.config.total_steps for t in trainers):
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                for trainer in trainers:
                    if trainer.step < trainer.config.total_steps and trainer.batches_consumed <= position:
                        trainer.train_step(batch)
                        trainer.checkpoint_if_due(data_state)
                position += 1
                bar.update(1)
                if len(trainers) == 1:
                    bar.set_postfix(loss=f"{trainers[0].history[-1]['loss']:.4g}", refresh=False)
    except BaseException:
        for trainer in trainers:
            trainer.close()
        raise
    for trainer in trainers:
        trainer.finish(data_state)


def train_sae(
    sae: SAE,
    batches: Iterable[Batch],
    config: TrainConfig,
    loss_fn: LossFn | None = None,
    step_fn: StepFn | None = None,
) -> TrainResult:
    """Train ``sae`` in place on ``batches`` (an iterable of ``(n, d_in)`` tensors, or of dicts of tensors
    with a ``step_fn``) for ``config.total_steps`` steps. ``loss_fn`` defaults to
    ``saebench.train.losses.default_loss(sae)``. See :class:`Trainer` and ``docs/training.md``."""
    return Trainer(sae, config, loss_fn=loss_fn, step_fn=step_fn).fit(batches)
