"""Hook points and the :class:`Backbone` wrapper that extracts activations from them.

A backbone is a frozen vision model plus a set of named hook points. Each hook point captures the output (or
input) of one module during the image forward pass and converts it to tokens ``(B, T, d)``:

- kind ``"tokens"``: the module yields ``(B, T, d)`` already (ViT blocks, final norm);
- kind ``"map"``: a convolutional map ``(B, C, H, W)`` becomes ``(B, H*W, C)``, row-major;
- kind ``"pooled"``: a vector per image ``(B, d)`` becomes ``(B, 1, d)``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from saebench.acts.backbones.preprocessing import Preprocessing
from saebench.acts.backbones.weights import sha256_file, state_dict_sha256
from saebench.acts.tokens import TokenLayout

HOOK_KINDS = ("tokens", "pooled", "map")
CAPTURES = ("output", "input")
_BLOCK_NAME = re.compile(r"^(block|resid)\.(-?\d+)$")


class UnknownHookError(KeyError):
    """A hook name that the backbone does not define; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0])


@dataclass(frozen=True)
class HookPoint:
    """One place in a backbone to read activations from.

    Attributes:
        name: the hook's name (``"block.3"``, ``"final_norm"``, ``"pooled"``, ``"embed"``, ...).
        module: dotted path of the hooked submodule in ``Backbone.model`` (``""`` is the model itself).
        width: ``d``, the width of each token.
        layout: the token layout of the extracted ``(B, T, d)`` tensor at the preprocessing's image size.
        kind: ``"tokens"`` (the module yields ``(B, T, d)``), ``"map"`` (``(B, C, H, W)``) or ``"pooled"``
            (``(B, d)``).
        capture: ``"output"`` of the module, or its first positional ``"input"`` (e.g. the input of a
            classifier head is the pooled pre-logit embedding).
    """

    name: str
    module: str
    width: int
    layout: TokenLayout
    kind: str = "tokens"
    capture: str = "output"

    def __post_init__(self) -> None:
        if self.kind not in HOOK_KINDS:
            raise ValueError(
                f"HookPoint {self.name!r}: unknown kind {self.kind!r}; valid: {', '.join(HOOK_KINDS)}"
            )
        if self.capture not in CAPTURES:
            raise ValueError(
                f"HookPoint {self.name!r}: capture must be one of {CAPTURES}, got {self.capture!r}"
            )
        if not isinstance(self.width, int) or self.width <= 0:
            raise ValueError(f"HookPoint {self.name!r}: width must be a positive int, got {self.width!r}")
        if self.kind == "pooled" and self.layout != TokenLayout.pooled():
            raise ValueError(f"HookPoint {self.name!r}: a pooled hook has layout TokenLayout.pooled()")
        if self.kind == "map" and (self.layout.grid is None or self.layout.n_prefix):
            raise ValueError(
                f"HookPoint {self.name!r}: a map hook has a grid layout without class/register tokens"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (part of the backbone fingerprint)."""
        return {
            "name": self.name,
            "module": self.module,
            "width": self.width,
            "layout": self.layout.to_dict(),
            "kind": self.kind,
            "capture": self.capture,
        }


@dataclass
class TextTower:
    """The text side of a vision-language backbone (open_clip): tokenizer + ``encode_text``.

    Attributes:
        encode: maps token ids ``(N, context_length)`` to embeddings ``(N, width)``.
        tokenize: maps a list of N strings to token ids ``(N, context_length)``.
        width: embedding width.
        description: what determines the tokenisation (tokenizer class, context length), for the fingerprint.
    """

    encode: Callable[[Tensor], Tensor]
    tokenize: Callable[[list[str]], Tensor]
    width: int
    description: dict[str, Any] = field(default_factory=dict)


class _StopForward(Exception):
    """Raised by a hook once every requested activation is captured, to skip the rest of the forward pass."""


def _module_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's first floating-point tensor (CPU float32 for a model without one)."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    first = next((t for t in tensors if t.is_floating_point()), None)
    return (first.device, first.dtype) if first is not None else (torch.device("cpu"), torch.float32)


class Backbone:
    """A frozen vision model with named hook points.

    Attributes:
        name: the registry name (or the name given to :func:`backbone_from_module`).
        model: the ``nn.Module``, in eval mode with gradients off.
        hooks: hook name -> :class:`HookPoint`.
        preprocessing: how images become inputs (``preprocessing.transform()``).
        text: the text tower of a vision-language model, or None.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        hooks: dict[str, HookPoint],
        preprocessing: Preprocessing,
        *,
        image_forward: Callable[[Tensor], Any] | None = None,
        text: TextTower | None = None,
        source: dict[str, Any] | None = None,
        weights_file: str | None = None,
    ):
        """Prefer :func:`load_backbone` or :func:`backbone_from_module` over calling this directly.

        Args:
            image_forward: runs the image forward pass; defaults to ``model(images)``.
            source: what the model is (library, version, architecture, tag, how the weights were made); goes
                into the fingerprint.
            weights_file: the file the weights were loaded from, hashed into the fingerprint.
        """
        for key, hook in hooks.items():
            if hook.name != key:
                raise ValueError(f"hook registered under {key!r} is named {hook.name!r}; use the same name")
            try:
                model.get_submodule(hook.module)
            except AttributeError as err:
                raise ValueError(
                    f"hook {key!r} points at module {hook.module!r}, "
                    f"which {type(model).__name__} does not have"
                ) from err
        self.name = name
        self.model = model.eval().requires_grad_(False)
        self.hooks = dict(hooks)
        self.preprocessing = preprocessing
        self.text = text
        self._image_forward = image_forward if image_forward is not None else model
        self._source = dict(source or {})
        self._weights_file = weights_file
        self._weights_identity: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Backbone({self.name!r}, hooks={list(self.hooks)})"

    @property
    def device(self) -> torch.device:
        return _module_device_dtype(self.model)[0]

    def to(self, device: str | torch.device) -> Backbone:
        """Move the model to ``device`` (in place); returns self."""
        self.model.to(device)
        return self

    @property
    def n_blocks(self) -> int:
        """Number of ``block.<i>`` hooks."""
        return sum(1 for name in self.hooks if name.startswith("block."))

    def resolve_hook(self, name: str) -> HookPoint:
        """The hook point for ``name``.

        Accepts the names in :attr:`hooks`, the alias ``resid.<i>`` for ``block.<i>`` (the residual stream
        after block i), and negative block indices (``block.-2`` is the second-to-last block, PatchSAE's hook,
        patchsae.md §1.2).
        """
        if name in self.hooks:
            return self.hooks[name]
        match = _BLOCK_NAME.match(name)
        if match and self.n_blocks:
            index = int(match.group(2))
            if -self.n_blocks <= index < self.n_blocks:
                return self.hooks[f"block.{index % self.n_blocks}"]
        raise UnknownHookError(
            f"backbone '{self.name}' has no hook {name!r}; valid hooks: {self.describe_hooks()}"
        )

    def describe_hooks(self) -> str:
        """The valid hook names, with block ranges collapsed (``block.0..block.11``)."""
        others = [name for name in self.hooks if not name.startswith("block.")]
        parts = []
        if self.n_blocks:
            parts.append(
                f"block.0..block.{self.n_blocks - 1} (alias resid.<i>; negative i counts from the end)"
            )
        return ", ".join(parts + others)

    def extract(
        self, images: Tensor, hooks: Sequence[str], *, differentiable: bool = False
    ) -> dict[str, Tensor]:
        """Run the image forward pass once and return the activations at ``hooks``.

        Runs under ``torch.inference_mode`` (unless ``differentiable``); stops the forward pass as soon as
        every requested hook has fired.

        Args:
            images: ``(B, 3, H, W)`` preprocessed images (moved to the model's device and dtype).
            hooks: hook names (see :meth:`resolve_hook`).
            differentiable: run with autograd enabled instead, so the activations carry gradients back to
                ``images`` (feature visualisation, e.g. :mod:`saebench.viz.cam`); the weights' own
                ``requires_grad`` is left as it is.

        Returns:
            requested name -> ``(B, T, d)`` tensor on the model's device, laid out as the hook's ``layout``.
            Without ``differentiable`` these are inference tensors: ``.clone()`` one before modifying it in
            place outside inference mode.
        """
        if isinstance(hooks, str):
            raise TypeError(f"hooks must be a sequence of hook names, e.g. [{hooks!r}], not a string")
        if not hooks:
            raise ValueError(f"no hooks requested; valid hooks: {self.describe_hooks()}")
        points = {name: self.resolve_hook(name) for name in hooks}
        images = self._check_images(images)
        captured: dict[str, Tensor] = {}
        handles = []

        def make_hook(name: str, point: HookPoint) -> Callable[..., None]:
            def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
                value = args[0] if point.capture == "input" else output
                if not isinstance(value, Tensor):
                    raise TypeError(
                        f"hook {name!r}: module {point.module!r} {point.capture} is a "
                        f"{type(value).__name__}, not a tensor"
                    )
                captured[name] = value
                if len(captured) == len(points):
                    raise _StopForward

            return hook

        try:
            for name, point in points.items():
                module = self.model.get_submodule(point.module)
                handles.append(module.register_forward_hook(make_hook(name, point)))
            with torch.enable_grad() if differentiable else torch.inference_mode():
                try:
                    self._image_forward(images)
                except _StopForward:
                    pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [name for name in points if name not in captured]
        if missing:
            raise RuntimeError(f"hooks {missing} did not fire during the forward pass of '{self.name}'")
        return {name: self._to_tokens(captured[name], points[name], name) for name in points}

    def _check_images(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(
                f"images must be a (B, 3, H, W) tensor, got {shape}; use preprocessing.transform()"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"images must be float (normalised), got {images.dtype}; use preprocessing.transform()"
            )
        if images.device.type != "meta" and not torch.isfinite(images).all():
            raise ValueError("images contain NaN or Inf")
        device, dtype = _module_device_dtype(self.model)
        return images.to(device=device, dtype=dtype)

    def _to_tokens(self, value: Tensor, point: HookPoint, name: str) -> Tensor:
        expected_ndim = {"tokens": 3, "map": 4, "pooled": 2}[point.kind]
        if value.ndim != expected_ndim:
            raise RuntimeError(
                f"hook {name!r} ({point.kind}) expected a {expected_ndim}-d tensor from {point.module!r}, "
                f"got shape {tuple(value.shape)}"
            )
        if point.kind == "map":
            if value.requires_grad:
                value.register_hook(_gradient_in_layout_of(value))
            value = value.flatten(2).transpose(1, 2)
        elif point.kind == "pooled":
            value = value.unsqueeze(1)
        if value.shape[1:] != (point.layout.n_tokens, point.width):
            raise RuntimeError(
                f"hook {name!r} produced {value.shape[1]} tokens of width {value.shape[2]}, but its layout "
                f"{point.layout} has {point.layout.n_tokens} tokens of width {point.width}; feed images of "
                f"size {self.preprocessing.output_size} (the backbone's preprocessing)"
            )
        return value.contiguous()

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Text-tower embeddings ``(N, d_text)`` (not L2-normalised) of ``texts``, under inference mode."""
        if self.text is None:
            raise ValueError(
                f"backbone '{self.name}' has no text tower; the open_clip backbones (clip-*) have one"
            )
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of strings")
        tokens = self.text.tokenize(list(texts)).to(self.device)
        with torch.inference_mode():
            return self.text.encode(tokens)

    def weights_identity(self) -> dict[str, Any]:
        """Digests of the weights (computed once: hashing a large model takes seconds)."""
        if self._weights_identity is None:
            identity = {"state_dict_sha256": state_dict_sha256(self.model)}
            if self._weights_file is not None:
                identity["file_sha256"] = sha256_file(self._weights_file)
            self._weights_identity = identity
        return self._weights_identity

    def fingerprint(self, hooks: Sequence[str] | None = None) -> dict[str, Any]:
        """Everything that determines the activations, as a JSON-ready dict.

        Contains the name, the model source (library, version, architecture, tag, weights origin), the
        weights' digests, the hooks (all, or only those named in ``hooks``), the preprocessing, and the text
        tower's tokenisation when there is one.
        """
        points = self.hooks.values() if hooks is None else [self.resolve_hook(name) for name in hooks]
        fingerprint = {
            "backbone": self.name,
            "source": self._source,
            "weights": self.weights_identity(),
            "hooks": {point.name: point.to_dict() for point in points},
            "preprocessing": self.preprocessing.to_dict(),
        }
        if self.text is not None:
            fingerprint["text"] = dict(self.text.description, width=self.text.width)
        return fingerprint


def check_input_size(
    name: str, preprocessing: Preprocessing, model_size: int | tuple[int, int], kwarg: str
) -> None:
    """Refuse a preprocessing whose image size is not the model's fixed input size (ViT position grids)."""
    model_size = (model_size, model_size) if isinstance(model_size, int) else tuple(model_size)
    if tuple(preprocessing.output_size) != model_size:
        raise ValueError(
            f"backbone '{name}' takes {model_size[0]}x{model_size[1]} images but the preprocessing gives "
            f"{preprocessing.output_size[0]}x{preprocessing.output_size[1]}; build the model for that size "
            f"with model_kwargs={{'{kwarg}': {preprocessing.output_size[0]}}} or change the preprocessing"
        )


def backbone_from_module(
    module: nn.Module, hooks: dict[str, HookPoint], preprocessing: Preprocessing, name: str
) -> Backbone:
    """Wrap any ``nn.Module`` whose ``forward(images)`` runs the image pass, with hand-declared hook points.

    Use :func:`probe_hook_points` to build the hook points of convolutional maps without working out their
    grid sizes by hand.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not hooks:
        raise ValueError("give at least one hook point")
    source = {"library": "custom", "class": f"{type(module).__module__}.{type(module).__qualname__}"}
    return Backbone(name, module, hooks, preprocessing, source=source)


def _gradient_in_layout_of(value: Tensor) -> Callable[[Tensor], Tensor]:
    """A tensor hook giving the gradient of a captured feature map the map's own memory layout.

    Turning an ``(B, C, H, W)`` map into row-major tokens makes its gradient channels-last strided; fed into a
    contiguous convolution network's backward (EfficientNet-Lite0 on CPU, torch 2.15) that gave wrong input
    gradients (a finite-difference check: 176 against -54), and right ones in the map's own layout.
    """
    layout = torch.channels_last if value.is_contiguous(memory_format=torch.channels_last) else None

    def to_layout(grad: Tensor) -> Tensor:
        return grad.contiguous(memory_format=layout) if layout is not None else grad.contiguous()

    return to_layout


def probe_hook_points(
    model: nn.Module,
    modules: dict[str, tuple[str, str, str]],
    image_size: tuple[int, int],
    image_forward: Callable[[Tensor], Any] | None = None,
) -> dict[str, HookPoint]:
    """Hook points whose shapes are read off one forward pass of a blank image.

    Args:
        model: the module that owns the hooked submodules.
        modules: hook name -> ``(module path, kind, capture)`` with kind ``"map"`` or ``"pooled"``.
        image_size: ``(H, W)`` of the probe image (the preprocessing's output size).
        image_forward: the image forward pass (default ``model``).

    On the ``meta`` device the probe costs nothing; on a real device it is one forward pass of one image, run
    in eval mode (the model's mode is restored after): in training mode BatchNorm layers would fold the blank
    image into their running statistics and so change the weights the backbone then runs and fingerprints.
    """
    shapes: dict[str, torch.Size] = {}
    handles = []
    for name, (path, kind, capture) in modules.items():
        if kind not in ("map", "pooled"):
            raise ValueError(f"probe_hook_points handles kinds 'map' and 'pooled', got {kind!r} for {name!r}")

        def hook(
            module: nn.Module, args: tuple[Any, ...], output: Any, name: str = name, capture: str = capture
        ):
            shapes[name] = (args[0] if capture == "input" else output).shape

        handles.append(model.get_submodule(path).register_forward_hook(hook))
    device, dtype = _module_device_dtype(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            (image_forward or model)(torch.zeros(1, 3, *image_size, device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    points = {}
    for name, (path, kind, capture) in modules.items():
        shape = shapes[name]
        layout = TokenLayout(grid=(shape[2], shape[3])) if kind == "map" else TokenLayout.pooled()
        points[name] = HookPoint(name, path, int(shape[1]), layout, kind=kind, capture=capture)
    return points
