"""HER against plain replay on a sparse-reward goal env (benchmarks/point_goal_env.py), several seeds.

Each cell (replay option, seed) trains crossq_trl's CrossQ (small networks, eager update) in a worker process,
measures the deterministic success rate (the goal within reach at the episode's last step, 50 fixed evaluation
episodes) every ``EVAL_EVERY`` env steps, and writes one JSON file to ``benchmarks/results/her/``. A cell whose JSON
exists is skipped. ``--summary`` (also run at the end) writes ``benchmarks/results/her.md``::

    python benchmarks/her_learning.py --workers 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "her"
SUMMARY = ROOT / "results" / "her.md"
SEEDS = (0, 1, 2)
STEPS, EVAL_EVERY, EVAL_EPISODES = 1000, 250, 50
# the settings of tests/test_her.py's learning check
COMMON = {"learning_starts": 100, "net_arch": [64, 64], "policy_delay": 1, "gamma": 0.95, "compile": False}
OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "her_future": {"replay_buffer_class": "her", "replay_buffer_kwargs": {"goal_selection_strategy": "future"}},
    "her_final": {"replay_buffer_class": "her", "replay_buffer_kwargs": {"goal_selection_strategy": "final"}},
    "her_episode": {"replay_buffer_class": "her", "replay_buffer_kwargs": {"goal_selection_strategy": "episode"}},
}


def run_cell(option: str, seed: int) -> dict[str, Any]:
    import torch

    sys.path.insert(0, str(ROOT.parent))
    from benchmarks.point_goal_env import PointGoalEnv, success_rate
    from crossq_trl import CrossQ

    torch.set_num_threads(1)
    start = time.perf_counter()
    model = CrossQ("MultiInputPolicy", PointGoalEnv, seed=seed, **COMMON, **OPTIONS[option])
    curve = {0: success_rate(model, EVAL_EPISODES)}
    while model.num_timesteps < STEPS:
        model.learn(EVAL_EVERY, reset_num_timesteps=model.num_timesteps == 0)
        curve[model.num_timesteps] = success_rate(model, EVAL_EPISODES)
    return {
        "option": option,
        "seed": seed,
        "settings": {key: repr(value) for key, value in {**COMMON, **OPTIONS[option]}.items()},
        "success_rate": curve,
        "seconds": time.perf_counter() - start,
    }


def write_cell(option: str, seed: int) -> str:
    path = RESULTS / f"{option}__seed{seed}.json"
    path.write_text(json.dumps(run_cell(option, seed), indent=1))
    return path.name


def summary() -> str:
    cells = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))]
    steps = sorted({int(step) for cell in cells for step in cell["success_rate"]})
    lines = [
        "# HER vs plain replay on PointGoalEnv",
        "",
        "`benchmarks/her_learning.py`: crossq_trl's CrossQ, eager update, settings "
        f"`{COMMON}`; deterministic success rate (goal within reach at the last step) over {EVAL_EPISODES} fixed "
        "evaluation episodes, mean over seeds (per seed in brackets). A uniformly random policy succeeds in about "
        "2% of the episodes.",
        "",
        "| option | seeds | " + " | ".join(f"{step} steps" for step in steps) + " |",
        "|---|---|" + "---|" * len(steps),
    ]
    for option in OPTIONS:
        runs = [cell for cell in cells if cell["option"] == option]
        if not runs:
            continue
        row = []
        for step in steps:
            rates = [run["success_rate"].get(str(step)) for run in runs]
            rates = [rate for rate in rates if rate is not None]
            row.append(f"{sum(rates) / len(rates):.2f} [{', '.join(f'{rate:.2f}' for rate in rates)}]")
        lines.append(f"| {option} | {len(runs)} | " + " | ".join(row) + " |")
    seconds = [cell["seconds"] for cell in cells]
    lines += ["", f"Wall-clock per run {min(seconds):.0f}-{max(seconds):.0f} s on a shared 2-core CPU.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--summary", action="store_true", help="only rewrite the summary")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.summary:
        todo = [(o, s) for s in args.seeds for o in args.options if not (RESULTS / f"{o}__seed{s}.json").exists()]
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            for name in pool.map(write_cell, *zip(*todo, strict=True)) if todo else []:
                print("wrote", name, flush=True)
    SUMMARY.write_text(summary())
    print(SUMMARY.read_text())


if __name__ == "__main__":
    main()
