"""A MaPLe-like prompt-adapted variant of the frozen zoo ViT: learned visual prompt tokens, shared weights.

PatchSAE compares a frozen CLIP ViT-B/16 with MaPLe (Khattak et al., CVPR 2023), which keeps every CLIP
weight frozen and adds learned tokens to the sequence (patchsae.md §2.6): 2 visual context tokens, "deep"
prompts in the first 9 of 12 blocks, trained few-shot on the base half of a dataset's classes and evaluated
on the base and novel halves separately (the CoOp base-to-novel protocol). This module does the same to the
zoo ViT (:class:`~saebench.zoo.models.ZooViT`) on Fashion-MNIST:

- :class:`PromptedViT`: ``[cls, prompts, patches]`` through the frozen blocks. Before each of the first
  ``depth`` blocks the prompt positions are overwritten by that block's own learned tokens (block 0 inserts
  them), as MaPLe's vision branch replaces its context tokens layer by layer. MaPLe appends the prompts after
  the patches; attention is permutation-equivariant and prompts get no position embedding, so the place in
  the sequence changes nothing, and here they sit where :class:`~saebench.acts.tokens.TokenLayout` puts
  register tokens. The ViT's own frozen ``head`` classifies (MaPLe's frozen text side has no analogue here:
  the zoo ViT is a classifier), its logits restricted to the classes of the split being evaluated.
- :func:`in_domain`: the downstream images. The zoo ViT was trained on all of Fashion-MNIST, so prompts are
  trained and evaluated on low-contrast (faded) images, a domain shift the frozen ViT has not seen, as
  MaPLe adapts CLIP to datasets other than its pre-training data.
- :class:`PromptedEntry`: the frozen entry, the prompt shape, the domain and the training; its config hash
  names the cache folder ``$SAEBENCH_CACHE/zoo/<name>-<hash>/`` (``prompts.safetensors`` + ``record.json``)
  next to the zoo's own models (:func:`~saebench.zoo.registry.cache_root`).
- :func:`prompted_backbone`: the adapted model as a :class:`~saebench.acts.backbones.Backbone` with the same
  hook names as the frozen ``zoo-vit`` (``block.<i>``, ``final_norm``, ``pooled``, ``logits``); its token
  hooks carry the prompts as ``n_registers`` tokens, so :func:`cls_and_patches` reads the same 1 + 49
  positions as the frozen model's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

import saebench
from saebench.acts.backbones.core import Backbone, HookPoint
from saebench.acts.backbones.weights import load_state_dict_file, state_dict_sha256
from saebench.acts.tokens import TokenLayout
from saebench.zoo.data import ZOO_PREPROCESSING, LabelledImages, load_fashion_mnist, normalize_pixels
from saebench.zoo.models import ViTConfig, ZooViT
from saebench.zoo.registry import ENTRIES, RECORD_FILE, ZooEntry, cache_root, ensure_trained
from saebench.zoo.train import TrainSettings, augment, optimise, predict, torch_threads

__all__ = [
    "PromptConfig",
    "PromptedEntry",
    "PromptedViT",
    "TrainedPrompts",
    "VisualPrompts",
    "PROMPTED_VIT",
    "PROMPTS_FILE",
    "DOMAINS",
    "in_domain",
    "per_class_first",
    "split_accuracy",
    "train_prompts",
    "ensure_prompted",
    "load_prompted",
    "prompted_backbone",
    "cls_and_patches",
]

PROMPTS_FILE = "prompts.safetensors"
DOMAINS = ("original", "low_contrast")
"""Image domains of the downstream task: the zoo's own images, or faded ones (:func:`in_domain`)."""
PROMPT_FORMAT = 1
"""Version of this module's training code, part of every config hash."""


@dataclass(frozen=True)
class PromptConfig:
    """Shape of the visual prompts.

    Attributes:
        n_prompts: learned tokens per block (MaPLe's ``N_CTX``: 2, patchsae.md §2.6).
        depth: blocks that get their own prompts, counted from the first (MaPLe: 9 of CLIP's 12).
        init_std: standard deviation of the normal initialisation (MaPLe draws its visual context from
            N(0, 0.02²)).
    """

    n_prompts: int = 2
    depth: int = 3
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("n_prompts", "depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"PromptConfig.{name} must be an int >= 1, got {value!r}")
        if not self.init_std > 0:
            raise ValueError(f"PromptConfig.init_std must be > 0, got {self.init_std!r}")


class VisualPrompts(nn.Module):
    """The only trained tensor: ``tokens`` of shape ``(depth, n_prompts, width)``."""

    def __init__(self, config: PromptConfig, width: int):
        super().__init__()
        self.config = config
        self.tokens = nn.Parameter(torch.randn(config.depth, config.n_prompts, width) * config.init_std)


class PromptedViT(nn.Module):
    """A frozen :class:`ZooViT` run on ``[cls, prompts, patches]`` (``1 + n_prompts + h*w`` tokens).

    Args:
        vit: the frozen model; its parameters are set to ``requires_grad=False`` and shared, not copied.
        config: the prompt shape; ``config.depth`` may not exceed the ViT's number of blocks.
    """

    def __init__(self, vit: ZooViT, config: PromptConfig):
        super().__init__()
        if not isinstance(vit, ZooViT):
            raise TypeError(f"PromptedViT wraps a ZooViT, got {type(vit).__name__}")
        if config.depth > vit.config.depth:
            raise ValueError(
                f"PromptConfig.depth {config.depth} exceeds the ViT's {vit.config.depth} blocks; "
                f"use depth <= {vit.config.depth}"
            )
        self.vit = vit.eval().requires_grad_(False)
        self.prompts = VisualPrompts(config, vit.config.width)

    @property
    def config(self) -> ViTConfig:
        return self.vit.config

    @property
    def layout(self) -> TokenLayout:
        """``[cls, prompts (as registers), patches]``."""
        return TokenLayout(n_cls=1, n_registers=self.prompts.config.n_prompts, grid=self.config.grid)

    def residual_stream(self, images: Tensor) -> Tensor:
        """``(B, 1 + n_prompts + h*w, width)``: the residual stream after the last block."""
        n_prompts = self.prompts.config.n_prompts
        x = self.vit.input_tokens(images)
        for index, block in enumerate(self.vit.blocks):
            if index < self.prompts.config.depth:
                prompts = self.prompts.tokens[index].expand(len(x), -1, -1)
                rest = x[:, 1 + (n_prompts if index else 0) :]  # block 0 inserts, later blocks replace
                x = torch.cat([x[:, :1], prompts, rest], dim=1)
            x = block(x)
        return x

    def embed(self, images: Tensor) -> Tensor:
        """``(B, width)``: the class token after the frozen final norm (what ``head`` reads)."""
        return self.vit.norm(self.residual_stream(images))[:, 0]

    def forward(self, images: Tensor) -> Tensor:
        return self.vit.head(self.embed(images))


def cls_and_patches(tokens: Tensor, layout: TokenLayout) -> Tensor:
    """``(B, n_cls + h*w, d)``: ``tokens`` ``(B, T, d)`` laid out as ``layout`` without its register (prompt)
    tokens, i.e. the positions the frozen ViT has."""
    if tokens.ndim != 3 or tokens.shape[1] != layout.n_tokens:
        raise ValueError(f"tokens must be (B, {layout.n_tokens}, d) for {layout}, got {tuple(tokens.shape)}")
    return torch.cat([tokens[:, : layout.n_cls], tokens[:, layout.n_cls + layout.n_registers :]], dim=1)


def in_domain(data: LabelledImages, domain: str) -> LabelledImages:
    """``data`` as seen in ``domain``: ``"original"`` unchanged; ``"low_contrast"``: every pixel ``p`` becomes
    ``0.4 p + 40`` (a faded image on a grey background, values 40..142).

    MaPLe adapts CLIP to datasets other than its pre-training data; the zoo ViT was trained on all of
    Fashion-MNIST, so on its own images prompts have nothing to learn (measured: base accuracy 90.9% before
    and after). Faded images are the downstream shift: the frozen ViT's accuracy drops (about 67% base and
    35% novel on the first 2,000 test images) and prompts can recover it, as MaPLe does on CLIP's
    downstream datasets.
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; valid: {', '.join(DOMAINS)}")
    if domain == "original":
        return data
    pixels = (data.pixels.float() * 0.4 + 40.0).round().to(torch.uint8)
    return LabelledImages(pixels, data.labels, {**data.fingerprint, "domain": domain})


def per_class_first(data: LabelledImages, classes: tuple[int, ...], per_class: int | None) -> LabelledImages:
    """The images of ``classes`` only, the first ``per_class`` of each in file order (all when None)."""
    keep = torch.zeros(len(data), dtype=torch.bool)
    for label in classes:
        rows = (data.labels == label).nonzero().flatten()
        if per_class is not None and len(rows) < per_class:
            raise ValueError(f"class {label} has {len(rows)} images, fewer than per_class={per_class}")
        keep[rows[:per_class]] = True
    fingerprint = {**data.fingerprint, "classes": list(classes), "per_class": per_class}
    return LabelledImages(data.pixels[keep], data.labels[keep], fingerprint)


def split_accuracy(model: nn.Module, data: LabelledImages, classes: tuple[int, ...]) -> float:
    """Accuracy on the images of ``classes`` when the prediction is the argmax over those classes' logits
    only (each half of a base-to-novel split is classified separately, patchsae.md §2.6)."""
    split = per_class_first(data, classes, None)
    columns = torch.tensor(classes)
    predicted = columns[predict(lambda x: model(x)[:, columns], split)]
    return (predicted == split.labels).float().mean().item()


def train_prompts(
    model: PromptedViT, settings: TrainSettings, train: LabelledImages, classes: tuple[int, ...]
) -> list[dict[str, float]]:
    """Train ``model.prompts`` (in place; the ViT stays frozen) with cross-entropy over the logits of
    ``classes`` on the images of ``train`` (all of one of ``classes``); returns the per-epoch history."""
    columns = torch.tensor(classes)
    targets = torch.full((int(train.labels.max()) + 1,), -1, dtype=torch.int64)
    targets[columns] = torch.arange(len(classes))
    labels = targets[train.labels]
    if (labels < 0).any():
        raise ValueError(f"train holds images outside the prompt-training classes {classes}")

    def batch_loss(batch: Tensor, generator: torch.Generator) -> Tensor:
        pixels = augment(train.pixels[batch], settings.hflip, generator)
        return F.cross_entropy(model(normalize_pixels(pixels))[:, columns], labels[batch])

    history = optimise([model.prompts], settings, len(train), batch_loss)
    model.vit.eval()
    return history


@dataclass(frozen=True)
class PromptedEntry:
    """The adapted model: which frozen zoo ViT, the prompt shape, and how the prompts are trained.

    Attributes:
        name: names the cache folder.
        base: the frozen zoo entry (its config hash is part of this entry's).
        prompts: the prompt shape.
        training: the prompt training (``train_images`` is ignored: ``shots_per_class`` picks the images;
            ``test_images`` limits the evaluation).
        base_classes: the classes the prompts are trained on; the rest of the head's classes are "novel".
        shots_per_class: the first N training images of each base class (MaPLe is trained few-shot).
        domain: the images' domain for training and evaluation (:func:`in_domain`).
    """

    name: str
    base: ZooEntry
    prompts: PromptConfig
    training: TrainSettings
    base_classes: tuple[int, ...] = (0, 1, 2, 3, 4)
    shots_per_class: int = 256
    domain: str = "low_contrast"

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(
                f"PromptedEntry {self.name!r}: domain must be one of {DOMAINS}, got {self.domain!r}"
            )
        if not isinstance(self.base.model, ViTConfig) or self.base.objective != "classify":
            raise ValueError(f"PromptedEntry {self.name!r}: the base must be a classifying zoo ViT entry")
        object.__setattr__(self, "base_classes", tuple(self.base_classes))
        n_classes = self.base.model.n_outputs
        if (
            not self.base_classes
            or len(set(self.base_classes)) != len(self.base_classes)
            or not all(0 <= c < n_classes for c in self.base_classes)
            or len(self.base_classes) >= n_classes
        ):
            raise ValueError(
                f"PromptedEntry {self.name!r}: base_classes must be distinct class ids in 0..{n_classes - 1} "
                f"leaving at least one novel class, got {self.base_classes}"
            )
        if not isinstance(self.shots_per_class, int) or self.shots_per_class < 1:
            raise ValueError(f"PromptedEntry {self.name!r}: shots_per_class must be an int >= 1")

    @property
    def novel_classes(self) -> tuple[int, ...]:
        return tuple(c for c in range(self.base.model.n_outputs) if c not in self.base_classes)

    def spec(self) -> dict[str, Any]:
        """Everything that determines the trained prompts."""
        spec = {
            "prompt_format": PROMPT_FORMAT,
            "base": {"name": self.base.name, "config_hash": self.base.config_hash()},
            "prompts": dataclasses.asdict(self.prompts),
            "training": dataclasses.asdict(self.training),
            "base_classes": list(self.base_classes),
            "shots_per_class": self.shots_per_class,
            "domain": self.domain,
        }
        return json.loads(json.dumps(spec))

    def config_hash(self) -> str:
        """First 16 hex digits of the sha256 of the canonical JSON of :meth:`spec`."""
        canonical = json.dumps(self.spec(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def folder(self) -> Path:
        """``<cache root>/zoo/<name>-<config hash>``."""
        return cache_root() / "zoo" / f"{self.name}-{self.config_hash()}"

    def with_seed(self, seed: int) -> PromptedEntry:
        """The same entry with the prompts trained from ``seed``."""
        return dataclasses.replace(self, training=dataclasses.replace(self.training, seed=seed))


PROMPTED_VIT = PromptedEntry(
    "zoo-vit-prompted",
    base=ENTRIES["zoo-vit"],
    prompts=PromptConfig(n_prompts=2, depth=3),
    training=TrainSettings(epochs=5, batch_size=64, lr=1e-2, weight_decay=0.0, hflip=True, threads=1),
)
"""The mini tier's adapted zoo ViT: 2 prompts in 3 of its 4 blocks (MaPLe: 2 in 9 of 12), trained on 256
low-contrast images of each of the first five Fashion-MNIST classes (the CoOp convention: the first half is
the base)."""


@dataclass
class TrainedPrompts:
    """An adapted model (in eval mode) and its record (spec, base/novel accuracies, history, versions)."""

    entry: PromptedEntry
    model: PromptedViT
    record: dict[str, Any]


def _accuracies(model: nn.Module, entry: PromptedEntry, test: LabelledImages) -> dict[str, float]:
    return {
        "base": split_accuracy(model, test, entry.base_classes),
        "novel": split_accuracy(model, test, entry.novel_classes),
    }


def _train(entry: PromptedEntry, vit: ZooViT, data_root: str | Path | None) -> TrainedPrompts:
    settings = entry.training
    train = per_class_first(
        load_fashion_mnist("train", None, data_root), entry.base_classes, entry.shots_per_class
    )
    train = in_domain(train, entry.domain)
    test = in_domain(load_fashion_mnist("test", settings.test_images, data_root), entry.domain)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch_threads(settings.threads):
        torch.manual_seed(settings.seed)
        model = PromptedViT(vit, entry.prompts)
        history = train_prompts(model, settings, train, entry.base_classes)
        seconds = time.perf_counter() - start
        accuracy = {"frozen": _accuracies(vit, entry, test), "prompted": _accuracies(model, entry, test)}
    record = {
        "name": entry.name,
        "config_hash": entry.config_hash(),
        "spec": entry.spec(),
        "accuracy": accuracy,
        "train_seconds": seconds,
        "history": history,
        "train_data": train.fingerprint,
        "test_data": test.fingerprint,
        "base_state_dict_sha256": state_dict_sha256(vit),
        "versions": {"saebench": saebench.__version__, "torch": torch.__version__},
    }
    return TrainedPrompts(entry, model.eval(), record)


def _save(trained: TrainedPrompts) -> None:
    """Write the prompts, then the record: a folder counts as cached only once both files exist."""
    folder = trained.entry.folder()
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{PROMPTS_FILE}.partial"
    save_file({"tokens": trained.model.prompts.tokens.detach().contiguous()}, str(staging))
    staging.replace(folder / PROMPTS_FILE)
    (folder / RECORD_FILE).write_text(json.dumps(trained.record, indent=2, sort_keys=True) + "\n")


def load_prompted(entry: PromptedEntry, vit: ZooViT) -> TrainedPrompts | None:
    """The cached prompts of ``entry`` on the frozen ``vit``, or None when not trained yet. Refuses a ``vit``
    whose weights differ from those the prompts were trained on."""
    folder = entry.folder()
    if not (folder / PROMPTS_FILE).is_file() or not (folder / RECORD_FILE).is_file():
        return None
    record = json.loads((folder / RECORD_FILE).read_text())
    if record["base_state_dict_sha256"] != state_dict_sha256(vit):
        raise ValueError(
            f"{folder}: the prompts were trained on other weights of {entry.base.name!r} than these; "
            "retrain them with ensure_prompted(entry, retrain=True)"
        )
    with torch.random.fork_rng(devices=[]):  # the throw-away init must not move the caller's RNG
        model = PromptedViT(vit, entry.prompts)
    model.prompts.tokens.data.copy_(load_state_dict_file(folder / PROMPTS_FILE)["tokens"])
    return TrainedPrompts(entry, model.eval(), record)


def ensure_prompted(
    entry: PromptedEntry = PROMPTED_VIT, data_root: str | Path | None = None, retrain: bool = False
) -> TrainedPrompts:
    """The cached adapted model of ``entry``; trains the frozen zoo ViT first if needed, then the prompts
    (about a minute on one CPU core for :data:`PROMPTED_VIT`), and caches them."""
    vit = ensure_trained(entry.base, data_root).model
    cached = None if retrain else load_prompted(entry, vit)
    if cached is not None:
        return cached
    trained = _train(entry, vit, data_root)
    _save(trained)
    return trained


def prompted_backbone(trained: TrainedPrompts) -> Backbone:
    """The adapted model as a backbone with the frozen ``zoo-vit``'s hook names: ``block.<i>`` and
    ``final_norm`` (``1 + n_prompts + 49`` tokens, prompts as registers), ``pooled`` and ``logits``."""
    model, entry = trained.model, trained.entry
    layout, width = model.layout, model.config.width
    hooks = [HookPoint(f"block.{i}", f"vit.blocks.{i}", width, layout) for i in range(model.config.depth)]
    hooks += [
        HookPoint("final_norm", "vit.norm", width, layout),
        HookPoint("pooled", "vit.head", width, TokenLayout.pooled(), kind="pooled", capture="input"),
        HookPoint("logits", "vit.head", model.config.n_outputs, TokenLayout.pooled(), kind="pooled"),
    ]
    source = {
        "library": "saebench.zoo.prompted",
        "version": saebench.__version__,
        "architecture": "PromptedViT",
        "config_hash": entry.config_hash(),
        "spec": entry.spec(),
        "weights": {"kind": "file", "prompts": str(entry.folder() / PROMPTS_FILE)},
    }
    return Backbone(entry.name, model, {h.name: h for h in hooks}, ZOO_PREPROCESSING, source=source)
