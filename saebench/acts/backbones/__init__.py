"""Vision backbones for activation caching: a registry of named models with hook points and token layouts.

>>> backbone = load_backbone("efficientnet-lite0", pretrained=True)
>>> x = backbone.preprocessing.transform()(image)[None]          # (1, 3, 224, 224)
>>> acts = backbone.extract(x, ["features", "pooled"])
>>> acts["features"].shape, acts["pooled"].shape          # (1, 49, 1280), (1, 1, 1280)

Importing this package registers every entry (timm, open_clip and the EfficientNet packages are imported only
when a backbone of theirs is built). See ``docs/backbones.md`` for the table of entries.
"""

from saebench.acts.backbones import efficientnet, open_clip_models, timm_vit  # noqa: F401  (registers entries)
from saebench.acts.backbones.core import (
    Backbone,
    HookPoint,
    TextTower,
    UnknownHookError,
    backbone_from_module,
    probe_hook_points,
)
from saebench.acts.backbones.preprocessing import (
    CLIP_MEAN,
    CLIP_STD,
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageTransform,
    Preprocessing,
)
from saebench.acts.backbones.registry import (
    BackboneSpec,
    UnknownBackboneError,
    available_backbones,
    get_spec,
    load_backbone,
    register_backbone,
)
from saebench.acts.backbones.weights import WEIGHTS_DIR_ENV, WeightsNotFoundError
from saebench.acts.tokens import TokenLayout

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "HALF",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WEIGHTS_DIR_ENV",
    "Backbone",
    "BackboneSpec",
    "HookPoint",
    "ImageTransform",
    "Preprocessing",
    "TextTower",
    "TokenLayout",
    "UnknownBackboneError",
    "UnknownHookError",
    "WeightsNotFoundError",
    "available_backbones",
    "backbone_from_module",
    "get_spec",
    "load_backbone",
    "probe_hook_points",
    "register_backbone",
]
