"""The full tier's whole path on tiny inputs in the authors' formats: raw float32 memmaps named
``..._{N}_{dim}.npy`` with ``.txt`` labels beside them, a vocabulary file and a tiny random open_clip model
as the text tower (the real tier needs CLIP weights, 4M embeddings and a GPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

D = 16  # embedding width of the tiny model
CLASSES = ("cat", "dog", "bird")


def _embeddings(n: int, generator: torch.Generator) -> tuple[np.ndarray, list[str]]:
    """Rows from a shared sparse dictionary (3 of 24 atoms per row, one set by the class) plus an offset."""
    atoms = torch.randn(24, D, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(len(CLASSES), (n,), generator=generator)
    codes = torch.zeros(n, 24)
    codes[torch.arange(n), labels] = 2.0
    extra = torch.randint(3, 24, (n, 2), generator=generator)
    codes.scatter_(1, extra, torch.rand(n, 2, generator=generator) + 0.5)
    rows = codes @ atoms + 3.0 + 0.05 * torch.randn(n, D, generator=generator)
    return rows.numpy().astype(np.float32), [CLASSES[i] for i in labels.tolist()]


def _write(folder, stem: str, rows: np.ndarray, labels: list[str] | None = None):
    """An authors' embedding file: raw float32 bytes, shape in the name (precompute_activations.py)."""
    path = folder / f"{stem}_{rows.shape[0]}_{rows.shape[1]}.npy"
    memmap = np.memmap(path, dtype=np.float32, mode="w+", shape=rows.shape)
    memmap[:] = rows
    memmap.flush()
    if labels is not None:
        path.with_suffix(".txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_text_tower():
    """A random open_clip CLIP with a 1-layer, 32-wide text transformer projecting to ``D`` dimensions."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    from saebench.acts.backbones.core import TextTower

    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=D,
        vision_cfg=CLIPVisionCfg(layers=1, width=32, patch_size=8, image_size=16, head_width=16),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    ).eval()
    return TextTower(encode=model.encode_text, tokenize=open_clip.get_tokenizer("ViT-B-32"), width=D)


TINY_CONFIG = {
    "device": "cpu",
    "normalization": "target_norm_code",
    "batch_size": 64,
    "epochs": 3,
    "train": {"optimizer": "adamw", "eps": 6.25e-10, "grad_clip": 1.0, "schedule": "constant"},
    "backbones": {
        "tiny-clip": {
            "train": "train",
            "eval": "eval",
            "probe_eval": "val",
            "text_eval": "text",
            "text_tower": {"backbone": "unused-here", "weights": "unused-here"},
        }
    },
    "saes": [
        {
            "name": "relu",
            "architecture": "relu",
            "backbone": "tiny-clip",
            "expansion": 8,
            "l1_coefficient": 0.001,
            "lr": 1e-3,
        },
        {"name": "topk", "architecture": "topk", "backbone": "tiny-clip", "expansion": 8, "k": 8, "lr": 1e-3},
        {
            "name": "batchtopk",
            "architecture": "batchtopk",
            "backbone": "tiny-clip",
            "expansion": 8,
            "k": 8,
            "lr": 1e-3,
        },
        {
            "name": "msae-rw",
            "architecture": "matryoshka",
            "backbone": "tiny-clip",
            "expansion": 8,
            "weighting": "rw",
            "first_k": 8,
            "lr": 1e-3,
            "epochs": 2,
        },
    ],
    "evaluation": {"chunk_rows": 128, "cknna_batch": 100, "cknna_max_batches": 2},
    "probe": {"lr": 0.01, "batch_size": 64, "epochs": 5, "patience": 2, "seed": 42},
    "vocabulary": {"file": "vocabulary", "threshold": -1.0},
}


@pytest.mark.slow  # 10-40 s on a busy 2-core machine, most of it importing open_clip
def test_full_tier_runs_end_to_end(msae, tmp_path, tiny_text_tower):
    generator = torch.Generator().manual_seed(1)
    eval_rows, eval_labels = _embeddings(300, generator)
    val_rows, val_labels = _embeddings(120, generator)
    paths = {
        "train": _write(tmp_path, "cc3m_tiny_train_image", _embeddings(640, generator)[0]),
        "eval": _write(tmp_path, "imagenet_tiny_train_image", eval_rows, eval_labels),
        "val": _write(tmp_path, "imagenet_tiny_validation_image", val_rows, val_labels),
        "text": _write(tmp_path, "cc3m_tiny_validation_text", _embeddings(110, generator)[0]),
        "vocabulary": tmp_path / "vocab.txt",
    }
    paths["vocabulary"].write_text("cat\n\ndog\nbird\nred car\n", encoding="utf-8")

    result = msae.full_tier.full_experiment(TINY_CONFIG, paths, {"tiny-clip": tiny_text_tower}, seed=0)

    assert [run.fields["name"] for run in result.runs] == ["relu", "topk", "batchtopk", "msae-rw"]
    for run in result.runs:
        assert run.fields["backbone"] == "tiny-clip" and run.fields["n_latents"] == 8 * D
        assert all(math.isfinite(v) for v in run.metrics.values()), run.label()
        # the sweep's last k keeps every latent: the top-m of the full codes are the full codes
        assert run.metrics["msae_fvu_at_k128"] == pytest.approx(run.metrics["msae_fvu_full"], abs=1e-6)
        # threshold -1 names every latent, each vocabulary entry counted once: at most the 4 entries
        assert 1 <= run.metrics["named_concepts"] <= 4
        assert 0 <= run.metrics["probe_agreement_full"] <= 100 and run.metrics["probe_kl_full"] >= 0
        assert {"text_msae_fvu_full", "text_cknna_input_codes", "text_dead_count_full"} <= set(run.metrics)
    by_name = {run.fields["name"]: run for run in result.runs}
    assert by_name["topk"].metrics["l0"] <= 8 + 1e-9  # TopK keeps at most k codes per row
    assert by_name["msae-rw"].fields["k"] == 8  # the first nesting level, the authors' inference k


def test_authors_memmap_round_trip_and_refusals(msae, tmp_path):
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = _write(tmp_path, "imagenet_ViT-B~16_train_image", rows)
    assert path.name == "imagenet_ViT-B~16_train_image_4_3.npy"
    np.testing.assert_array_equal(msae.full_tier.open_authors_embeddings(path), rows)

    wrong = tmp_path / "cc3m_x_train_image_5_3.npy"
    wrong.write_bytes(rows.tobytes())  # 4 rows of data, the name says 5
    with pytest.raises(ValueError, match="truncated or the name is wrong"):
        msae.full_tier.open_authors_embeddings(wrong)
    real_npy = tmp_path / "cc3m_x_train_image_4_3.npy"
    np.save(real_npy, rows)
    with pytest.raises(ValueError, match="NPY header"):
        msae.full_tier.open_authors_embeddings(real_npy)
    with pytest.raises(ValueError, match="_<rows>_<dim>.npy"):
        msae.full_tier.open_authors_embeddings(tmp_path / "embeddings.npy")


def test_labels_and_vocabulary_files(msae, tmp_path):
    path = _write(
        tmp_path, "imagenet_t_validation_image", np.zeros((3, 2), np.float32), ["dog", "cat", "dog"]
    )
    names = msae.full_tier.read_row_texts(path, 3)
    assert msae.full_tier.labels_as_ints(names, ["cat", "dog"]).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="not among the training classes"):
        msae.full_tier.labels_as_ints(["owl"], ["cat", "dog"])
    with pytest.raises(ValueError, match="has 3 lines for 4 embedding rows"):
        msae.full_tier.read_row_texts(path, 4)
    vocab = tmp_path / "v.txt"
    vocab.write_text("  the \n\nof\n", encoding="utf-8")
    assert msae.full_tier.read_vocabulary(vocab) == ["the", "of"]
