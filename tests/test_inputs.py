"""Data specs for the CLI: planted worlds and tensor files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from saebench.data.inputs import open_data, parse_planted_spec


def test_planted_spec_parses_typed_fields():
    config = parse_planted_spec("planted:d=32,n_atoms=64,k=4,noise_std=0.05,seed=7")
    assert (config.d, config.n_atoms, config.k, config.noise_std, config.seed) == (32, 64, 4, 0.05, 7)


def test_tensor_file_batches_cover_each_epoch_once_and_reshuffle(tmp_path):
    rows = torch.arange(40, dtype=torch.float32).reshape(20, 2)
    torch.save(rows, tmp_path / "rows.pt")
    data = open_data(str(tmp_path / "rows.pt"))
    batches = list(data.batches(batch_size=5, n_batches=8, seed=1))
    first_epoch = torch.cat(batches[:4])[:, 0].sort().values
    second_epoch = torch.cat(batches[4:])[:, 0].sort().values
    assert torch.equal(first_epoch, rows[:, 0]) and torch.equal(second_epoch, rows[:, 0])
    assert not torch.equal(torch.cat(batches[:4]), torch.cat(batches[4:]))  # a new permutation per epoch
    # Resuming at batch 6 gives the same batches as the uninterrupted stream.
    resumed = list(data.batches(batch_size=5, n_batches=2, start_batch=6, seed=1))
    assert all(torch.equal(a, b) for a, b in zip(resumed, batches[6:], strict=True))


def test_bad_files_are_named(tmp_path):
    np.save(tmp_path / "three_d.npy", np.zeros((2, 3, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"three_d.npy must hold one 2-D tensor .* \(2, 3, 4\)"):
        open_data(str(tmp_path / "three_d.npy"))
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]], dtype=np.float32))
    with pytest.raises(ValueError, match="nan.npy contains NaN/Inf"):
        open_data(str(tmp_path / "nan.npy"))
    save_file({"a": torch.zeros(2, 2), "b": torch.zeros(2, 2)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(ValueError, match="holds 2 tensors"):
        open_data(str(tmp_path / "two.safetensors"))
    (tmp_path / "rows.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported data file"):
        open_data(str(tmp_path / "rows.csv"))
