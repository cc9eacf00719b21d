"""Named checks of the MSAE claims (the toy and mini tiers): progressive recovery and truncation.

Both read the progressive sweep metrics ``msae_fvu_at_k{k}`` (the top ``k`` of an SAE's ReLU codes,
the authors' ``score_topk_sae_embeddings.py``; msae.md §4.7).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from saebench.repro.pipeline import CheckResult, Run

__all__ = ["graceful_check", "truncation_check"]


def truncation_check(msae: Run, topk: Run, ks: Sequence[int]) -> CheckResult:
    """MSAE's truncated reconstructions beat the TopK SAE's at every swept k below TopK's own k
    (§4.3 "multiple granularity levels")."""
    below = [k for k in ks if k < topk.fields["k"]]
    rows = [(k, msae.metrics[f"msae_fvu_at_k{k}"], topk.metrics[f"msae_fvu_at_k{k}"]) for k in below]
    passed = bool(rows) and all(m < t for _, m, t in rows)
    detail = "; ".join(f"k={k}: MSAE {m:.3g} vs TopK {t:.3g}" for k, m, t in rows)
    return CheckResult(passed=passed, detail=detail or "no swept k below TopK's k")


def graceful_check(run: Run, ks: Sequence[int]) -> CheckResult:
    """The run's swept FVU never rises as ``k`` grows: usable at any truncation (msae.md §4.3, §4.7)."""
    curve = [run.metrics[f"msae_fvu_at_k{k}"] for k in ks if f"msae_fvu_at_k{k}" in run.metrics]
    passed = all(b <= a for a, b in pairwise(curve))
    return CheckResult(passed=passed, detail="FVU over k: " + ", ".join(f"{v:.3g}" for v in curve))
