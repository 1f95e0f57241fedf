"""Learning with the exploration options: gSDE on Pendulum-v1, action noise on MountainCarContinuous-v0.

Each cell (option, env, seed) trains crossq_trl's CrossQ (small networks, eager update) in a worker process and writes
one JSON file to ``benchmarks/results/exploration/``: the final deterministic return over 10 episodes, the first env
step at which a training episode reached MountainCar's goal (its only termination) and how many did, and wall-clock.
A cell whose JSON exists is skipped. ``--summary`` (also run at the end) writes ``summary.md``::

    python benchmarks/exploration_learning.py --workers 2
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "exploration"
SEEDS = (0, 1, 2)
COMMON = {"net_arch": [64, 64], "batch_size": 128, "compile": False}
# env -> (steps, shared settings, {option name: CrossQ keywords}); callables are called in the worker.
# MountainCar: sb3's OU defaults (theta 0.15, dt 0.01) move too slowly to swing the car up from an untrained policy
# in a few thousand steps; dt 0.1 does (its goal count over 3000 exploration steps: 2-8 per seed, no noise: 0).
SUITE: dict[str, tuple[int, dict[str, Any], dict[str, dict[str, Any]]]] = {
    "Pendulum-v1": (
        4000,
        {"policy_delay": 2, "learning_starts": 200},
        {"default": {}, "gsde": {"use_sde": True}},
    ),
    "MountainCarContinuous-v0": (
        10_000,
        {"learning_starts": 1000},
        {"no_noise": {}, "ou_0.5_dt0.1": {"action_noise": lambda: ou_noise(sigma=0.5, dt=0.1)}},
    ),
}


def ou_noise(sigma: float, dt: float):
    from crossq_trl import OrnsteinUhlenbeckActionNoise

    return OrnsteinUhlenbeckActionNoise([0.0], [sigma], dt=dt)


def run_cell(env_id: str, option: str, seed: int) -> dict[str, Any]:
    import torch

    from crossq_trl import CrossQ, evaluate_policy, make_env

    torch.set_num_threads(1)
    steps, shared, options = SUITE[env_id]
    start = time.perf_counter()
    option_kwargs = {key: value() if callable(value) else value for key, value in options[option].items()}
    model = CrossQ("MlpPolicy", env_id, seed=seed, **COMMON, **shared, **option_kwargs)
    model.learn(steps)
    train_time = time.perf_counter() - start
    terminated = model.replay_buffer[:]["next", "terminated"].reshape(-1)
    goals = terminated.nonzero().flatten().tolist()
    returns, _ = evaluate_policy(make_env(env_id, seed=seed + 10_000), model.actor, n_episodes=10)
    return {
        "env": env_id,
        "option": option,
        "seed": seed,
        "steps": steps,
        "settings": {key: repr(value) for key, value in {**COMMON, **shared, **option_kwargs}.items()},
        "final_mean_return": returns.mean().item(),
        "final_returns": returns.tolist(),
        "goals_reached_in_training": len(goals),
        "first_goal_step": goals[0] + 1 if goals else None,
        "train_seconds": train_time,
    }


def cell_path(env_id: str, option: str, seed: int) -> Path:
    return RESULTS / f"{env_id}__{option}__seed{seed}.json"


def write_cell(env_id: str, option: str, seed: int) -> str:
    result = run_cell(env_id, option, seed)
    cell_path(env_id, option, seed).write_text(json.dumps(result, indent=1))
    return f"{env_id} {option} seed {seed}: {result['final_mean_return']:.1f} ({result['train_seconds']:.0f} s)"


def summary() -> str:
    lines = ["| env | option | seeds | final return per seed (10 det. episodes) | goal reached in training |"]
    lines.append("|---|---|---|---|---|")
    for env_id, (steps, _, options) in SUITE.items():
        for option in options:
            cells = [json.loads(p.read_text()) for s in SEEDS if (p := cell_path(env_id, option, s)).is_file()]
            if not cells:
                continue
            returns = ", ".join(f"{c['final_mean_return']:.0f}" for c in cells)
            goals = ", ".join(f"{c['goals_reached_in_training']} (first {c['first_goal_step']})" for c in cells)
            goals = goals if env_id == "MountainCarContinuous-v0" else "n/a"
            lines.append(f"| {env_id} ({steps} steps) | {option} | {len(cells)} | {returns} | {goals} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "summary.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--envs", nargs="*", default=list(SUITE))
    parser.add_argument("--summary", action="store_true", help="only write summary.md from the existing cells")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.summary:
        cells = [
            (env_id, option, seed)
            for env_id in args.envs
            for seed in SEEDS
            for option in SUITE[env_id][2]
            if not cell_path(env_id, option, seed).is_file()
        ]
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            for line in pool.map(write_cell, *zip(*cells, strict=True)) if cells else []:
                print(line, flush=True)
    print(summary())


if __name__ == "__main__":
    main()
