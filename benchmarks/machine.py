"""What every benchmark records about the machine it ran on, the machine's measured matmul rate, memory probes
(peak memory of a step, bytes autograd saves for the backward) and where results are written."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

import saebench

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results" / "bench"
_results_dir = RESULTS_DIR


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_machine(device: torch.device) -> dict:
    """Device, CPU, core and thread counts, the 1-minute load average, and library versions."""
    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "saebench": saebench.__version__,
        "python": platform.python_version(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = os.getloadavg()[0]
    if device.type == "cuda":
        info["gpu_memory_bytes"] = torch.cuda.get_device_properties(device).total_memory
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_second(
    m: int, k: int, n: int, device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 5
) -> float:
    """Best-of-``repeats`` rate of one ``(m, k) @ (k, n)`` matmul (``2·m·k·n`` flops), in flop/s."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * m * k * n / best


# ------------------------------------------------------------------------------------------ memory
def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; ``None`` where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak resident set size (``VmHWM``) to the current one (Linux >= 4.0: writing 5 to
    ``/proc/self/clear_refs``); ``False`` where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_bytes("VmHWM") is not None


class PeakMemory:
    """Peak memory of a block above its start: on CUDA ``torch.cuda.max_memory_allocated``; on a CPU the
    kernel's peak resident set size (``VmHWM``, reset at the start of the block), so every page the block
    touched counts, whoever allocated it. Both are exact (no sampling).

        with PeakMemory(device) as peak:
            step(x)
        peak.bytes
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes = 0
        self.method = (
            "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak resident set size (VmHWM)"
        )

    def __enter__(self) -> PeakMemory:
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        else:
            if not _reset_peak_rss():
                raise RuntimeError("peak CPU memory needs Linux's /proc/self/clear_refs and VmHWM")
            self._baseline = _status_bytes("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._baseline
        else:
            self.bytes = _status_bytes("VmHWM") - self._baseline


@contextmanager
def saved_for_backward(exclude: Callable[[], Iterator[torch.Tensor]]) -> Iterator[dict]:
    """Record what autograd saves for the backward inside the block: ``{"bytes": total of distinct tensors,
    "largest_shape": shape of the largest}``. Tensors sharing storage with ``exclude()`` (the parameters,
    which exist anyway) are left out."""
    skip = {t.untyped_storage().data_ptr() for t in exclude()}
    seen: dict[int, tuple[int, list[int]]] = {}  # storage -> (bytes, shape of the largest view saved)

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in skip and t.numel() > 0 and (key not in seen or t.numel() > math.prod(seen[key][1])):
            seen[key] = (storage.nbytes(), list(t.shape))
        return t

    record: dict = {}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield record
    record["bytes"] = sum(nbytes for nbytes, _ in seen.values())
    record["largest_shape"] = max((shape for _, shape in seen.values()), key=math.prod, default=[])


# ----------------------------------------------------------------------------------------- results
def set_results_dir(path: Path) -> None:
    """Send every later :func:`write_result` to ``path`` (``--quick`` runs write beside the full results)."""
    global _results_dir
    _results_dir = Path(path)


def use_quick_results_dir() -> None:
    """Send later results to ``results/bench/quick/``: a ``--quick`` run never overwrites the full ones."""
    set_results_dir(RESULTS_DIR / "quick")


def results_dir() -> Path:
    return _results_dir


def write_result(name: str, payload: dict) -> Path:
    """Write ``<results dir>/<name>.json`` (sorted keys, trailing newline) and return its path."""
    _results_dir.mkdir(parents=True, exist_ok=True)
    path = _results_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path
