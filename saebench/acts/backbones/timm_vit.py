"""timm Vision Transformers: ViT-B/16, DINOv2 ViT-S/14 and ViT-B/14, SigLIP ViT-B/16, and any ``timm:<vit>``.

Hooks (module paths in timm's ``VisionTransformer``):

- ``block.<i>``: output of ``blocks.<i>``, the residual stream after block i, ``(B, T, d)``;
- ``final_norm``: output of ``norm``, the tokens after the final LayerNorm (what ``forward_features``
  returns);
- ``pooled``: input of ``head``, the pooled pre-logit embedding (CLS token for ``global_pool='token'``, the
  attention-pool output for SigLIP's ``'map'``);
- ``logits``: output of ``head`` when the model has a classifier.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from saebench.acts.backbones.core import Backbone, HookPoint, check_input_size
from saebench.acts.backbones.preprocessing import HALF, IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from saebench.acts.backbones.registry import (
    BackboneSpec,
    describe_source,
    library_failure,
    register_backbone,
    register_prefix,
)
from saebench.acts.backbones.weights import WeightsSource
from saebench.acts.tokens import TokenLayout

TIMM_HUB_FILES = ("model.safetensors", "pytorch_model.bin")

# USAE's preprocessing for its three models: Resize((224, 224)) bicubic, no crop (usae.md §1.7).
USAE_VIT_PREPROCESSING = Preprocessing(resize=(224, 224), interpolation="bicubic", mean=HALF, std=HALF)
USAE_DINOV2_PREPROCESSING = Preprocessing(
    resize=(224, 224), interpolation="bicubic", mean=IMAGENET_MEAN, std=IMAGENET_STD
)


def timm_preprocessing(model: nn.Module) -> Preprocessing:
    """timm's eval transform for ``model``: shorter side to ``size / crop_pct``, centre crop ``size``.

    ``size`` is the model's own input size (``patch_embed.img_size``, which follows ``img_size=``).
    """
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    height, width = (int(s) for s in model.patch_embed.img_size)
    crop_pct = config.get("crop_pct") or 1.0
    return Preprocessing(
        resize=math.floor(min(height, width) / crop_pct),
        crop=(height, width),
        interpolation=config["interpolation"],
        mean=config["mean"],
        std=config["std"],
    )


def vit_hooks(model: nn.Module) -> dict[str, HookPoint]:
    """Hook points of a timm ``VisionTransformer`` (read from its attributes)."""
    n_registers = int(getattr(model, "num_reg_tokens", 0))
    layout = TokenLayout(
        n_cls=int(model.num_prefix_tokens) - n_registers,
        n_registers=n_registers,
        grid=tuple(int(g) for g in model.patch_embed.grid_size),
    )
    width = int(model.embed_dim)
    hooks = {
        f"block.{i}": HookPoint(f"block.{i}", f"blocks.{i}", width, layout) for i in range(len(model.blocks))
    }
    if not isinstance(model.norm, nn.Identity):
        hooks["final_norm"] = HookPoint("final_norm", "norm", width, layout)
    pooled_width = int(getattr(model, "head_hidden_size", model.num_features))
    hooks["pooled"] = HookPoint(
        "pooled", "head", pooled_width, TokenLayout.pooled(), kind="pooled", capture="input"
    )
    if isinstance(model.head, nn.Linear):
        hooks["logits"] = HookPoint(
            "logits", "head", model.head.out_features, TokenLayout.pooled(), kind="pooled"
        )
    return hooks


def build_timm_vit(
    spec: BackboneSpec,
    source: WeightsSource,
    model_kwargs: dict[str, Any],
    preprocessing: Preprocessing | None,
    build_device: str,
) -> Backbone:
    """Create the timm model (random, from a file through timm's checkpoint filters, or from the hub)."""
    import timm

    name = f"{spec.architecture}.{spec.tag}" if spec.tag else spec.architecture
    try:
        if source.kind == "file":
            model = timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": str(source.path)}, **model_kwargs
            )
        else:
            model = timm.create_model(name, pretrained=source.kind == "hub", **model_kwargs)
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        if source.kind == "random":
            raise
        raise library_failure(spec, source, err) from err
    if not (
        hasattr(model, "blocks") and hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens")
    ):
        raise ValueError(
            f"timm model '{spec.architecture}' is not a VisionTransformer; wrap it with backbone_from_module "
            "and declare its hook points"
        )
    preprocessing = preprocessing or timm_preprocessing(model)
    if not getattr(model, "dynamic_img_size", False):
        check_input_size(spec.name, preprocessing, tuple(model.patch_embed.img_size), "img_size")
    return Backbone(
        spec.name,
        model,
        vit_hooks(model),
        preprocessing,
        source=describe_source(spec, source, model_kwargs, timm.__version__),
        weights_file=str(source.path) if source.kind == "file" else None,
    )


def _spec(
    name: str,
    architecture: str,
    tag: str | None,
    preprocessing: Preprocessing | None,
    description: str,
    **model_kwargs: Any,
) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        library="timm",
        architecture=architecture,
        tag=tag,
        preprocessing=preprocessing,
        build=build_timm_vit,
        hub_repo=f"timm/{architecture}.{tag}" if tag else None,
        hub_files=TIMM_HUB_FILES,
        model_kwargs=model_kwargs,
        description=description,
    )


def generic_timm_spec(architecture: str) -> BackboneSpec:
    """Spec for ``timm:<architecture>``: timm's default tag and eval preprocessing."""
    from timm.models import get_pretrained_cfg, is_model

    base = architecture.split(".")[0]
    if not is_model(base):
        raise ValueError(f"timm has no model '{base}' (see timm.list_models('vit_*'))")
    tag = (
        architecture.split(".", 1)[1]
        if "." in architecture
        else getattr(get_pretrained_cfg(base), "tag", None)
    )
    return _spec(
        f"timm:{architecture}", base, tag or None, None, "any timm ViT; timm's default preprocessing"
    )


register_prefix("timm", generic_timm_spec)

register_backbone(
    _spec(
        "vit-b16",
        "vit_base_patch16_224",
        "augreg2_in21k_ft_in1k",
        USAE_VIT_PREPROCESSING,
        "supervised ViT-B/16 (USAE's 'ViT': vit_base_patch16_224, default tag of timm 1.0; usae.md §1.7)",
    )
)
register_backbone(
    _spec(
        "dinov2-vits14",
        "vit_small_patch14_dinov2",
        "lvd142m",
        USAE_DINOV2_PREPROCESSING,
        "DINOv2 ViT-S/14 at 224 px: 16x16 patch grid (USAE; usae.md §1.6-1.7)",
        img_size=224,
    )
)
register_backbone(
    _spec(
        "dinov2-vitb14",
        "vit_base_patch14_dinov2",
        "lvd142m",
        USAE_DINOV2_PREPROCESSING,
        "DINOv2 ViT-B/14 at 224 px: 16x16 patch grid",
        img_size=224,
    )
)
register_backbone(
    _spec(
        "siglip-vitb16",
        "vit_base_patch16_siglip_224",
        "webli",
        USAE_VIT_PREPROCESSING,
        "SigLIP ViT-B/16, no CLS token (USAE: vit_base_patch16_siglip_224.webli; usae.md §1.7)",
    )
)
