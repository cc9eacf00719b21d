"""The mini tier's CLIP-like pair: a zoo ViT image tower trained to align Fashion-MNIST images with the
frozen MiniLM text embeddings of their captions.

Recipe: LiT (Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning") with the roles
swapped: the text tower (all-MiniLM-L6-v2, :mod:`saebench.zoo.text`) is locked, the image tower (a
:class:`~saebench.zoo.models.ZooViT` whose head projects the class token to the 384-d text space) is trained.
Each training image is paired with one caption of its class, drawn afresh at every step from the caption
bank (templates × descriptive words). Loss: CLIP's symmetric InfoNCE (Radford et al. 2021, §2.3 and Fig. 3)
over the batch, with a learnable temperature initialised to 0.07 and the logit scale clipped at 100 (§2.5).
The text tower being frozen, its embeddings of the whole caption bank are computed once before training.

Zero-shot classification (:func:`zero_shot_accuracy`): each class is the normalised mean of the embeddings of
its prompts in held-out templates; an image is assigned the class of highest cosine similarity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saebench.zoo.data import LabelledImages, normalize_pixels
from saebench.zoo.models import ZooViT
from saebench.zoo.text import ZERO_SHOT_TEMPLATES, FrozenTextEncoder, caption_bank, class_prompts
from saebench.zoo.train import TrainSettings, accuracy, augment, optimise

__all__ = [
    "INIT_TEMPERATURE",
    "MAX_LOGIT_SCALE",
    "LogitScale",
    "ClipPair",
    "contrastive_loss",
    "train_clip_tower",
    "zero_shot_weights",
    "zero_shot_accuracy",
]

INIT_TEMPERATURE = 0.07
"""CLIP's initial softmax temperature (Radford et al. 2021, §2.5)."""
MAX_LOGIT_SCALE = 100.0
"""CLIP clips the logit scale (1 / temperature) at 100 (§2.5)."""


class LogitScale(nn.Module):
    """The learnable ``1 / temperature``, parametrised by its log and clipped at :data:`MAX_LOGIT_SCALE`."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / INIT_TEMPERATURE)))

    def forward(self) -> Tensor:
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)


def contrastive_loss(image_emb: Tensor, text_emb: Tensor, caption_ids: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE between a batch of images and their captions (CLIP, Radford et al. 2021, Fig. 3).

    Args:
        image_emb: ``(B, d)`` unit-norm image embeddings.
        text_emb: ``(B, d)`` unit-norm embeddings of each image's caption.
        caption_ids: ``(B,)`` the caption of each pair; pairs sharing a caption are all positives of each
            other (the target is uniform over them), since their texts are identical.
        logit_scale: scalar ``1 / temperature``.

    Returns:
        ``(CE(image -> text) + CE(text -> image)) / 2`` over the ``(B, B)`` logits
        ``scale · image_emb @ text_embᵀ``.
    """
    logits = logit_scale * image_emb @ text_emb.T
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)  # symmetric: the same targets serve both directions
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def train_clip_tower(
    tower: ZooViT, settings: TrainSettings, train: LabelledImages, text: FrozenTextEncoder
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Train ``tower`` (in place) to align ``train``'s images with captions of their classes.

    Returns the per-epoch history and what else the record keeps (final logit scale, caption count).
    """
    if tower.config.n_outputs != text.width:
        raise ValueError(
            f"the image tower projects to {tower.config.n_outputs} dims but the text tower gives "
            f"{text.width}; use ViTConfig(n_outputs={text.width})"
        )
    captions, caption_class = caption_bank()
    bank = text.encode_fixed(captions).cpu()  # (n_captions, 384), unit norm
    counts = torch.bincount(caption_class, minlength=int(train.labels.max()) + 1)
    offsets = torch.cumsum(counts, 0) - counts  # the bank is grouped by class
    scale = LogitScale()

    def batch_loss(batch: Tensor, generator: torch.Generator) -> Tensor:
        labels = train.labels[batch]
        draw = torch.rand(len(batch), generator=generator)
        caption_ids = offsets[labels] + (draw * counts[labels]).long()
        pixels = augment(train.pixels[batch], settings.hflip, generator)
        image_emb = F.normalize(tower(normalize_pixels(pixels)), dim=-1)
        return contrastive_loss(image_emb, bank[caption_ids], caption_ids, scale())

    history = optimise([tower, scale], settings, len(train), batch_loss)
    return history, {"logit_scale": scale().item(), "n_captions": len(captions)}


def zero_shot_weights(text: FrozenTextEncoder, templates: Sequence[str] = ZERO_SHOT_TEMPLATES) -> Tensor:
    """``(n_classes, 384)`` unit-norm class embeddings: the normalised mean of each class's prompt
    embeddings."""
    prompts = class_prompts(templates)
    flat = text.encode_fixed([p for per_class in prompts for p in per_class]).cpu()
    per_class = flat.reshape(len(prompts), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1)


def zero_shot_accuracy(
    tower: ZooViT,
    text: FrozenTextEncoder,
    test: LabelledImages,
    templates: Sequence[str] = ZERO_SHOT_TEMPLATES,
) -> float:
    """Fraction of ``test`` whose most similar class embedding (:func:`zero_shot_weights`) is its label."""
    weights = zero_shot_weights(text, templates)
    return accuracy(lambda images: F.normalize(tower(images), dim=-1) @ weights.T, test)


class ClipPair:
    """The trained image tower and the frozen text tower, embedding into the same 384-d space.

    ``encode_image`` returns the projected (not normalised) image embedding, as open_clip's ``encode_image``
    does; ``encode_text`` returns MiniLM's unit-norm sentence embeddings. Compare them by cosine similarity.
    """

    def __init__(self, tower: ZooViT, text: FrozenTextEncoder):
        self.tower = tower.eval()
        self.text = text

    def encode_image(self, images: Tensor) -> Tensor:
        """``(B, 384)`` from ``(B, 1 or 3, 28, 28)`` images normalised like
        :data:`~saebench.zoo.data.ZOO_PREPROCESSING`."""
        with torch.inference_mode():
            return self.tower(images)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """``(N, 384)`` unit-norm embeddings of any list of strings (e.g. a concept vocabulary)."""
        return self.text.encode(texts).cpu()

    def similarity(self, images: Tensor, texts: Sequence[str]) -> Tensor:
        """``(B, N)`` cosine similarities between images and texts."""
        return F.normalize(self.encode_image(images), dim=-1) @ self.encode_text(texts).T
