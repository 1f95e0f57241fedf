"""Helpers shared by the throughput benchmarks: machine description, sgemm peak, timing statistics, output files.

Imported by ``update_throughput.py`` and ``training_throughput.py`` (run as scripts from any directory; this file
sits next to them on ``sys.path``). Not a library module and never imported by the tests.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "torch",
    "torchrl",
    "tensordict",
    "crossq-trl",
    "stable-baselines3",
    "sb3-contrib",
    "sbx-rl",
    "jax",
    "numpy",
)

# HalfCheetah-v5 shapes and the CrossQ defaults of the workload in shared/REFERENCE.md.
ENV_ID = "HalfCheetah-v5"
OBS_DIM = 17
ACTION_DIM = 6
BATCH_SIZE = 256
ACTOR_ARCH = (256, 256)
POLICY_DELAY = 3


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_version() -> dict[str, Any]:
    """Git revision of the checkout and whether crossq_trl/ differs from it."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    return {"git_head": git("rev-parse", "HEAD"), "crossq_trl_modified": bool(git("diff", "HEAD", "--", "crossq_trl"))}


def machine_info() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "code": code_version(),
        "loadavg_start": os.getloadavg(),
    }


def machine_markdown(info: dict[str, Any]) -> str:
    packages = ", ".join(f"{name} {version}" for name, version in info["packages"].items() if version)
    load = ", ".join(f"{x:.2f}" for x in info["loadavg_start"])
    end = info.get("loadavg_end")
    load_end = "" if end is None else " -> " + ", ".join(f"{x:.2f}" for x in end)
    local = " + local changes in crossq_trl/" if info["code"]["crossq_trl_modified"] else ""
    return (
        f"- CPU: {info['cpu_model']}, {info['logical_cpus']} logical CPUs ({info['usable_cpus']} usable), "
        f"torch threads {info['torch_threads']}\n"
        f"- load average (1, 5, 15 min): {load}{load_end}\n"
        f"- {packages}; Python {info['python']}\n"
        f"- git {info['code']['git_head'][:12]}{local}"
    )


def sgemm_peak(device: torch.device | str = "cpu", repeats: int = 5, min_seconds: float = 0.3) -> dict[str, float]:
    """Best float32 matmul throughput (GFLOP/s) with the current torch thread count (or on the GPU), on the two
    shapes of a [1024, 1024] critic layer: 1024x1024 @ 1024x1024 and 512x1024 @ 1024x1024 (a joint 2x256 batch)."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    results = {}
    for rows in (1024, 512):
        a, b = torch.randn(rows, 1024, device=device), torch.randn(1024, 1024, device=device)
        out = torch.empty(rows, 1024, device=device)
        flops = 2.0 * rows * 1024 * 1024
        for _ in range(3):
            torch.mm(a, b, out=out)
        best = 0.0
        for _ in range(repeats):
            count, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < min_seconds:
                torch.mm(a, b, out=out)
                sync()
                count += 1
            best = max(best, count * flops / elapsed / 1e9)
        results[f"mm_{rows}x1024x1024"] = best
    results["peak"] = max(results.values())
    return results


def pin_threads(threads: int | None) -> None:
    """``threads`` torch threads and the process pinned to as many CPUs (nothing when None). XLA's CPU thread pool
    ignores thread flags and uses every CPU the process may run on: pinning the process (before jax loads) gives
    every implementation the same CPUs."""
    if threads is not None:
        torch.set_num_threads(threads)
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def alternate(runners: dict[str, Callable[[], float]], rounds: int, log: Callable[[str], None]) -> dict[str, list]:
    """Call every runner once per round (the order rotating each round, so that no implementation always runs
    first or last); each returns a rate. Returns the rates per runner, round by round."""
    names = list(runners)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            rate = runners[name]()
            rates[name].append(rate)
            log(f"  round {round_index + 1}/{rounds} {name}: {rate:.2f}/s")
    return rates


def paired_ratios(rates: dict[str, list[float]], ours: str, other: str) -> list[float]:
    """Round-by-round ratios ours/other (each pair measured back to back)."""
    return [a / b for a, b in zip(rates[ours], rates[other], strict=True)]


def write_results(stem: str, markdown: str, payload: dict[str, Any], out_dir: Path = RESULTS_DIR) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.md").write_text(markdown)
    (out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {out_dir / stem}.md and .json")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
