"""What every benchmark records about the machine it ran on, and the machine's measured matmul rate."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

import saebench

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results" / "bench"


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
    """Device, CPU, core and thread counts, and library versions."""
    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "saebench": saebench.__version__,
        "python": platform.python_version(),
    }
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


def write_result(name: str, payload: dict) -> Path:
    """Write ``results/bench/<name>.json`` (sorted keys, trailing newline) and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path
