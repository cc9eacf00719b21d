"""pytest plugin: ``pytest reproductions/<paper> [--tier toy|mini|full]`` runs one test case per claim.

Registered by the repository's root ``conftest.py``. A reproduction's test file is one line::

    from saebench.repro.pytest_plugin import claim_tests

    test_claim = claim_tests(__file__)

Each reproduction's pipeline runs once per pytest session, tier and seed (cached on the session and shared
by all its cases). A failing case prints the readable diff of :func:`saebench.repro.compare.failure_message`;
a tier whose requirements are missing skips every case with what to supply. Run records go to a session
temporary folder, or under ``--repro-results DIR`` when given. The comparison tables are printed at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from saebench.repro.claims import ClaimsFileError
from saebench.repro.compare import comparison_table, failure_message
from saebench.repro.pipeline import ReproductionError, load_reproduction
from saebench.repro.runner import ReproductionReport, run_reproduction
from saebench.repro.tiers import DEFAULT_TIER, TIERS

__all__ = ["claim_tests"]

_MARKER = "saebench_reproduction"
_REPORTS = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("saebench", "saebench reproductions")
    group.addoption(
        "--tier",
        choices=TIERS,
        default=DEFAULT_TIER,
        help="tier of the reproduction claims to check (default: %(default)s)",
    )
    group.addoption(
        "--repro-seed", type=int, default=0, help="seed handed to reproduction pipelines (default: 0)"
    )
    group.addoption(
        "--repro-results",
        default=None,
        metavar="DIR",
        help="write run records under DIR/runs/ (default: a pytest temporary folder)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{_MARKER}(folder): the claims of the reproduction in folder")
    config.stash[_REPORTS] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(_MARKER)
    if marker is None:
        return
    try:
        claims = load_reproduction(marker.args[0]).claims().for_tier(metafunc.config.getoption("--tier"))
    except (ClaimsFileError, ReproductionError, FileNotFoundError) as exc:
        raise pytest.Collector.CollectError(str(exc)) from None  # shown as the bare message, no traceback
    metafunc.parametrize("saebench_claim", claims, ids=[claim.id for claim in claims])


def claim_tests(test_file: str) -> Callable[..., None]:
    """The parametrised test for the reproduction folder holding ``test_file`` (one case per claim)."""
    folder = str(Path(test_file).resolve().parent)

    def test_claim(saebench_claim, request: pytest.FixtureRequest) -> None:
        report = _report(request, folder)
        outcome = next(o for o in report.outcomes if o.claim == saebench_claim.id)
        if outcome.status == "skipped":
            pytest.skip(f"{report.paper} {report.tier}: {outcome.detail}")
        if outcome.failed:
            pytest.fail(failure_message(outcome), pytrace=False)

    return pytest.mark.saebench_reproduction(folder)(test_claim)


def _report(request: pytest.FixtureRequest, folder: str) -> ReproductionReport:
    """Run the reproduction once per session, tier and seed; later cases reuse its report (or its crash)."""
    config = request.config
    tier, seed = config.getoption("--tier"), config.getoption("--repro-seed")
    cache = config.stash[_REPORTS]
    key = (folder, tier, seed)
    if key not in cache:
        reproduction = load_reproduction(folder)
        factory = request.getfixturevalue("tmp_path_factory")
        results = config.getoption("--repro-results") or factory.mktemp("repro-results", numbered=True)
        workdir = factory.mktemp(f"{reproduction.name}-{tier}-seed{seed}")
        try:
            cache[key] = run_reproduction(reproduction, tier, seed, results, workdir)
        except Exception as exc:
            cache[key] = exc
    cached = cache[key]
    if isinstance(cached, Exception):
        raise RuntimeError(
            f"the pipeline of {Path(folder).name} crashed at tier {tier}: {cached!r}"
        ) from cached
    return cached


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    reports = [r for r in config.stash.get(_REPORTS, {}).values() if isinstance(r, ReproductionReport)]
    for report in reports:
        terminalreporter.section(f"saebench claims: {report.paper} · {report.tier} · seed {report.seed}")
        terminalreporter.write_line(comparison_table(report.outcomes) if report.outcomes else "(no claims)")
        if report.record_path:
            terminalreporter.write_line(f"record: {report.record_path}")
