"""CLIP's contrastive loss with an SAE reconstruction spliced into the CLS position of one block.

PatchSAE Table 2, columns "CL SAE" and "CL Org." (Lim et al., ICLR 2025, §A.1-A.2; authors' ``run_evals``,
taken from Fry 2024; patchsae.md §1.3): the symmetric image-text InfoNCE of one batch of matched pairs
(labels ``arange(batch)``), computed with the backbone as is and with the **CLS token only** of the hooked
block's output replaced by its SAE reconstruction. The authors' evaluation also zero-ablates that token and
scores ``(loss_sae - loss_orig) / (loss_zero - loss_orig)`` (0: the SAE costs nothing; 1: as bad as zeros).

The loss depends on the batch (its size and which pairs share it), so values compare only at equal batches.

For top-k latent masking (§4.1, :mod:`saebench.metrics.latent_masking`) the same splice replaces **all**
tokens of a block: :func:`block_tokens_classifier` turns a CLIP model and the zero-shot text features of
:func:`zero_shot_text_features` into the ``classify_fn(tokens_hat) -> logits`` that masking takes.
Works with open_clip ``CLIP`` models whose vision tower is a batch-first ``VisionTransformer`` (the
``clip-*`` backbones of :mod:`saebench.acts.backbones.open_clip_models`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from saebench.sae.base import SAE

__all__ = [
    "SplicedContrastiveLosses",
    "block_tokens_classifier",
    "zero_shot_text_features",
    "clip_contrastive_loss",
    "image_features_with_cls_replaced",
    "spliced_contrastive_losses",
]


class SplicedContrastiveLosses(NamedTuple):
    """Contrastive losses of one batch: ``original`` (CL Org.), ``with_sae`` (CL SAE), ``zero_ablated`` and
    ``score = (with_sae - original) / (zero_ablated - original)``."""

    original: float
    with_sae: float
    zero_ablated: float
    score: float


def clip_contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor | float
) -> torch.Tensor:
    """Symmetric InfoNCE of matched pairs ``(b, e)``, ``(b, e)``: features are L2-normalised, logits
    ``scale * img @ txt.T`` (``scale = exp(logit_scale)``), and the loss is the mean of the image->text and
    text->image cross-entropies with targets ``arange(b)`` (CLIP, Radford et al. 2021; HF ``clip_loss``)."""
    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            "image_features and text_features must be matched (batch, embed_dim) pairs, got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    logits = scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _resblock(model: torch.nn.Module, block: int) -> torch.nn.Module:
    transformer = getattr(getattr(model, "visual", None), "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None:
        raise TypeError(
            f"expected an open_clip CLIP model with a ViT image tower (visual.transformer.resblocks), "
            f"got {type(model).__name__}"
        )
    if not getattr(transformer, "batch_first", True):
        raise ValueError(
            "the open_clip transformer runs sequence-first; build the model with batch_first=True"
        )
    if not -len(blocks) <= block < len(blocks):
        raise ValueError(f"block {block} out of range: the image tower has {len(blocks)} blocks")
    return blocks[block]


@torch.no_grad()
def image_features_with_cls_replaced(
    model: torch.nn.Module,
    images: torch.Tensor,
    block: int,
    replace: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``model.encode_image(images)`` with the CLS token of resblock ``block``'s output (0-based, the
    residual stream after that block) replaced by ``replace(cls (b, d)) -> (b, d)``."""

    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        spliced = output.clone()
        spliced[:, 0, :] = replace(output[:, 0, :]).to(output.dtype)
        return spliced

    handle = _resblock(model, block).register_forward_hook(hook)
    try:
        return model.encode_image(images)
    finally:
        handle.remove()


@torch.no_grad()
def spliced_contrastive_losses(
    model: torch.nn.Module, images: torch.Tensor, texts: torch.Tensor, block: int, sae: SAE
) -> SplicedContrastiveLosses:
    """Table 2's CL Org. and CL SAE (plus the zero ablation) for one batch of matched ``images``
    ``(b, 3, H, W)`` and tokenised ``texts`` ``(b, context)``; ``block`` is the hooked resblock (0-based:
    PatchSAE's "layer 11" of CLIP ViT-B/16 is ``block = 10``)."""
    if images.shape[0] != texts.shape[0] or images.shape[0] < 2:
        raise ValueError(
            f"need at least 2 matched image-text pairs, got {images.shape[0]} images and "
            f"{texts.shape[0]} texts"
        )
    text_features = model.encode_text(texts)
    scale = model.logit_scale.exp()
    original = clip_contrastive_loss(model.encode_image(images), text_features, scale)
    with_sae = clip_contrastive_loss(
        image_features_with_cls_replaced(model, images, block, lambda cls: sae(cls).x_hat),
        text_features,
        scale,
    )
    zero = clip_contrastive_loss(
        image_features_with_cls_replaced(model, images, block, torch.zeros_like), text_features, scale
    )
    gap = float(zero - original)
    score = float(with_sae - original) / gap if gap != 0 else float("nan")
    return SplicedContrastiveLosses(float(original), float(with_sae), float(zero), score)


@torch.no_grad()
def zero_shot_text_features(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[Callable[[str], str]],
) -> torch.Tensor:
    """``(n_classes, embed_dim)``: per class, the mean over ``templates`` of the L2-normalised text embeddings
    of ``template(classname)``. Not re-normalised after the mean, as in the authors' masking script
    (patchsae.md §2.5; the 80 OpenAI ImageNet templates are ``open_clip.zero_shot_metadata``)."""
    if not classnames or not templates:
        raise ValueError("zero_shot_text_features needs at least one class name and one template")
    device = model.logit_scale.device
    features = []
    for name in classnames:
        texts = tokenizer([template(name) for template in templates]).to(device)
        features.append(F.normalize(model.encode_text(texts), dim=-1).mean(dim=0))
    return torch.stack(features)


def block_tokens_classifier(
    model: torch.nn.Module, block: int, text_features: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``classify_fn(tokens (b, T, d)) -> (b, n_classes)`` logits: the image tower run with resblock
    ``block``'s output (0-based) replaced by ``tokens``, then ``exp(logit_scale) * normalize(image_features)
    @ text_features.T`` (the authors' zero-shot head). The blocks before ``block`` run on blank images and
    their output is discarded, as in the authors' hook-based intervention."""
    resblock = _resblock(model, block)
    height, width = model.visual.image_size

    @torch.no_grad()
    def classify(tokens: torch.Tensor) -> torch.Tensor:
        def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            if output.shape != tokens.shape:
                raise ValueError(
                    f"tokens have shape {tuple(tokens.shape)} but block {block} outputs {tuple(output.shape)}"
                )
            return tokens.to(output.dtype)

        blank = torch.zeros(tokens.shape[0], 3, height, width, device=tokens.device)
        handle = resblock.register_forward_hook(hook)
        try:
            image_features = model.encode_image(blank)
        finally:
            handle.remove()
        scale = model.logit_scale.exp()
        return scale * F.normalize(image_features, dim=-1) @ text_features.to(image_features).T

    return classify
