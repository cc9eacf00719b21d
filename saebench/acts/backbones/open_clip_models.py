"""open_clip CLIP models with both towers: OpenAI CLIP ViT-B/16, ViT-L/14, ViT-B/32 and RN50.

The OpenAI weights were trained with QuickGELU, so the entries use open_clip's ``*-quickgelu`` configs (random
init then has the same architecture as the pretrained model). Preprocessing is CLIP's: resize the shorter side
to 224 bicubic, centre-crop 224, CLIP mean/std (open_clip's ``image_transform``; PatchSAE uses the equivalent
HF ``CLIPProcessor``, patchsae.md §1.2).

Hooks, image tower (module paths in ``open_clip.CLIP``):

- ViTs: ``block.<i>`` = output of ``visual.transformer.resblocks.<i>`` (residual stream, ``[CLS, patches]``);
  ``final_norm`` = output of ``visual.ln_post`` on all tokens (CLS token @ ``visual.proj`` = ``embed``);
- RN50: ``block.<i>`` = output of ``visual.layer<i+1>`` (a convolutional map, as ``H*W`` tokens);
- all: ``embed`` = output of ``visual``, the projected image embedding (``encode_image``, not L2-normalised;
  MSAE's "post-pooled" features, msae.md §1.2).

Text tower: :meth:`Backbone.encode_text` (``encode_text`` of open_clip, not L2-normalised).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from saebench.acts.backbones.core import (
    Backbone,
    HookPoint,
    TextTower,
    check_input_size,
    probe_hook_points,
)
from saebench.acts.backbones.preprocessing import CLIP_MEAN, CLIP_STD, Preprocessing
from saebench.acts.backbones.registry import BackboneSpec, describe_source, library_failure, register_backbone
from saebench.acts.backbones.weights import WeightsSource
from saebench.acts.tokens import TokenLayout

OPEN_CLIP_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CLIP_PREPROCESSING = Preprocessing(
    resize=224, crop=224, interpolation="bicubic", mean=CLIP_MEAN, std=CLIP_STD
)


def _vit_hooks(visual: nn.Module) -> dict[str, HookPoint]:
    if getattr(visual, "attn_pool", None) is not None:
        raise ValueError("open_clip ViTs with attentional pooling are not supported (no CLS-token layout)")
    if not getattr(visual.transformer, "batch_first", True):
        raise ValueError("open_clip transformer runs sequence-first; saebench expects batch_first=True")
    layout = TokenLayout(n_cls=1, grid=tuple(int(g) for g in visual.grid_size))
    width = int(visual.transformer.width)
    hooks = {
        f"block.{i}": HookPoint(f"block.{i}", f"visual.transformer.resblocks.{i}", width, layout)
        for i in range(len(visual.transformer.resblocks))
    }
    if not visual.final_ln_after_pool:  # otherwise ln_post normalises only the pooled token
        hooks["final_norm"] = HookPoint("final_norm", "visual.ln_post", width, layout)
    return hooks


def clip_hooks(model: nn.Module, image_size: tuple[int, int]) -> dict[str, HookPoint]:
    """Hook points of an open_clip ``CLIP`` model's image tower (ViT or ModifiedResNet).

    The RN50 map sizes are read off one forward pass of a blank image (:func:`probe_hook_points`).
    """
    visual = model.visual
    if hasattr(visual, "transformer"):
        hooks = _vit_hooks(visual)
    elif all(hasattr(visual, f"layer{i}") for i in range(1, 5)):
        maps = {f"block.{i}": (f"visual.layer{i + 1}", "map", "output") for i in range(4)}
        hooks = probe_hook_points(model, maps, image_size, image_forward=model.encode_image)
    else:
        raise ValueError(f"unsupported open_clip image tower {type(visual).__name__}")
    hooks["embed"] = HookPoint("embed", "visual", int(visual.output_dim), TokenLayout.pooled(), kind="pooled")
    return hooks


def build_open_clip(
    spec: BackboneSpec,
    source: WeightsSource,
    model_kwargs: dict[str, Any],
    preprocessing: Preprocessing | None,
    build_device: str,
) -> Backbone:
    """Create the open_clip model and wire both towers."""
    import open_clip

    pretrained = {"random": None, "file": str(source.path), "hub": spec.tag}[source.kind]
    try:
        model = open_clip.create_model(
            spec.architecture, pretrained=pretrained, device=build_device, **model_kwargs
        )
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        if source.kind == "random":
            raise
        raise library_failure(spec, source, err) from err
    preprocessing = preprocessing or CLIP_PREPROCESSING
    check_input_size(spec.name, preprocessing, model.visual.image_size, "force_image_size")
    tokenizer = open_clip.get_tokenizer(spec.architecture)
    text = TextTower(
        encode=model.encode_text,
        tokenize=tokenizer,
        width=int(open_clip.get_model_config(spec.architecture)["embed_dim"]),
        description={
            "tokenizer": type(tokenizer).__name__,
            "context_length": int(getattr(tokenizer, "context_length", 0)),
        },
    )
    return Backbone(
        spec.name,
        model,
        clip_hooks(model, preprocessing.output_size),
        preprocessing,
        image_forward=model.encode_image,
        text=text,
        source=describe_source(spec, source, model_kwargs, open_clip.__version__),
        weights_file=str(source.path) if source.kind == "file" else None,
    )


def _spec(name: str, architecture: str, hub_repo: str, description: str) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        library="open_clip",
        architecture=architecture,
        tag="openai",
        preprocessing=CLIP_PREPROCESSING,
        build=build_open_clip,
        hub_repo=hub_repo,
        hub_files=OPEN_CLIP_HUB_FILES,
        description=description,
    )


register_backbone(
    _spec(
        "clip-vitb16",
        "ViT-B-16-quickgelu",
        "timm/vit_base_patch16_clip_224.openai",
        "OpenAI CLIP ViT-B/16 (PatchSAE; MSAE appendix)",
    )
)
register_backbone(
    _spec(
        "clip-vitl14",
        "ViT-L-14-quickgelu",
        "timm/vit_large_patch14_clip_224.openai",
        "OpenAI CLIP ViT-L/14 (MSAE main results)",
    )
)
register_backbone(
    _spec(
        "clip-vitb32",
        "ViT-B-32-quickgelu",
        "timm/vit_base_patch32_clip_224.openai",
        "OpenAI CLIP ViT-B/32 (MSAE repo option)",
    )
)
register_backbone(
    _spec("clip-rn50", "RN50-quickgelu", "timm/resnet50_clip.openai", "OpenAI CLIP RN50 (MSAE repo option)")
)
