"""Dictionary alignment: cosine matrices, one-to-one Hungarian matching, and MCC against a ground truth.

Shapes: a dictionary is ``(n_atoms, d)``, one atom per row (``SAE.W_dec`` or ``PlantedWorld.true_atoms``).
Atoms are compared by cosine, so their norms do not matter, but an all-zero atom (no direction) is an error.
Matching uses scipy's ``linear_sum_assignment`` (the Hungarian method, Kuhn 1955) on the cosine matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

from saebench.metrics.validation import check_finite

__all__ = ["DictionaryAlignment", "cosine_matrix", "hungarian_alignment", "mcc"]


def _unit_rows(atoms: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(atoms, torch.Tensor) or atoms.ndim != 2 or atoms.numel() == 0:
        shape = tuple(atoms.shape) if isinstance(atoms, torch.Tensor) else type(atoms).__name__
        raise ValueError(f"{name} must be a non-empty (n_atoms, d) tensor, one atom per row; got {shape}")
    check_finite(atoms, name)
    atoms = atoms.detach().to(device="cpu", dtype=torch.float64)
    norms = atoms.norm(dim=1, keepdim=True)
    zero = int((norms == 0).sum().item())
    if zero:
        raise ValueError(f"{name} has {zero} all-zero atom(s); an atom without a direction has no cosine")
    return atoms / norms


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(n_a, n_b)`` float64 on the CPU: ``cos(a_i, b_j)`` for every pair of atoms (same ``d``)."""
    ua, ub = _unit_rows(a, "a"), _unit_rows(b, "b")
    if ua.shape[1] != ub.shape[1]:
        raise ValueError(
            f"dictionaries live in different spaces: a has d={ua.shape[1]}, b has d={ub.shape[1]}"
        )
    return ua @ ub.T


@dataclass(frozen=True)
class DictionaryAlignment:
    """A one-to-one matching of the atoms of a reference dictionary ``a`` to atoms of ``b``.

    rows, cols: ``(m,)`` int64 indices, ``a[rows[t]]`` is matched to ``b[cols[t]]``; ``m = min(n_a, n_b)``,
        sorted by ``rows``.
    cosines: ``(m,)`` float64, the score of each matched pair (signed cosine, or ``|cosine|`` when the
        matching was made with ``absolute=True``).
    n_reference: ``n_a``. Atoms of ``a`` left unmatched (``n_a > n_b``) score 0 in the summaries.
    threshold: the cosine a matched pair must exceed to count in ``fraction_above_threshold``.
    mean_cosine: ``sum(cosines) / n_a``, the mean score over the reference atoms.
    fraction_above_threshold: ``#{t : cosines[t] > threshold} / n_a``.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    cosines: torch.Tensor
    n_reference: int
    threshold: float
    mean_cosine: float
    fraction_above_threshold: float


def hungarian_alignment(
    a: torch.Tensor, b: torch.Tensor, threshold: float = 0.5, absolute: bool = False
) -> DictionaryAlignment:
    """Match each atom of ``a`` (the reference) to a distinct atom of ``b``, maximising the summed cosine.

    ``absolute=False`` (default) matches signed cosines, right for SAE atoms whose codes are non-negative, so
    an atom and its negation are different concepts. This is the USAE concept-consistency metric (decoder
    atoms of an independent SAE vs the USAE dictionary, a match means cosine > 0.5; usae.md §2.1, §4.4) and
    the MSAE seed-alignment score (Hungarian on the cosine matrix, mean matched cosine; msae.md §2.9, after
    Paulo & Belrose 2025). ``absolute=True`` matches ``|cosine|`` (sign-agnostic), as :func:`mcc` does.
    """
    scores = cosine_matrix(a, b)
    if absolute:
        scores = scores.abs()
    rows, cols = linear_sum_assignment(scores.numpy(), maximize=True)
    rows_t, cols_t = torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
    matched = scores[rows_t, cols_t]
    n_reference = scores.shape[0]
    return DictionaryAlignment(
        rows=rows_t,
        cols=cols_t,
        cosines=matched,
        n_reference=n_reference,
        threshold=threshold,
        mean_cosine=float(matched.sum()) / n_reference,
        fraction_above_threshold=float((matched > threshold).sum()) / n_reference,
    )


def mcc(learned_atoms: torch.Tensor, true_atoms: torch.Tensor) -> float:
    """Mean correlation coefficient of a learned dictionary ``(n_learned, d)`` against the ground truth
    ``(n_true, d)``: the mean, over true atoms, of ``|cos(true_i, learned_pi(i))|`` under the one-to-one
    matching ``pi`` that maximises the sum (Hungarian). A true atom left unmatched (``n_learned < n_true``)
    scores 0, so 1.0 means every true atom is recovered up to sign and scale.

    Source: the MCC of the identifiability literature (Hyvarinen & Morioka 2016, TCL; Khemakhem et al. 2020,
    iVAE) is the mean absolute correlation after an optimal one-to-one permutation of the components; sparse
    dictionary-recovery evaluations apply it to atoms, where the cosine of two atoms is their uncentred
    correlation. Contrast "mean max cosine similarity" (Sharkey et al. 2022), which allows many-to-one
    matches.
    """
    return hungarian_alignment(true_atoms, learned_atoms, threshold=0.0, absolute=True).mean_cosine
