"""Host time per env step of crossq_trl's training loop in the learning phase, and where it goes.

One env (HalfCheetah-v5), one update per env step, the ``CrossQ`` facade with the benchmark settings of
``training_throughput.py`` (actor [256, 256], critic ``--critic``, batch 256, policy_delay 3). After
``learning_starts`` random steps and the compile, ``--steps`` learning steps are timed twice:

- with the real update: host time = wall time minus the time inside ``CrossQUpdate.__call__`` (which returns when
  its work is done on CPU). This is what a run pays; the update leaves the caches cold for the Python that
  follows it, so the same host code runs slower than alone;
- with the update replaced by a stand-in that only writes the batch's priorities and returns the last metrics:
  the host work alone, warm caches.

Each part is timed by wrapping its method (inclusive times; the nested ones are subtracted to give each part its
own): the acting policy (``ActingPolicy.forward``), the env step with the rollout's bookkeeping
(``LeanGymEnv.buffered_rollout`` without the policy), the rest of the collector (``CrossQCollector.rollout``
without the env), the replay write with its NaN check (``CrossQTrainer._store``), the replay sample
(``CrossQTrainer._sample``) and what is left of TorchRL's Trainer loop and hooks.

A third measurement, `same work, no framework`, is the floor of this machine: the same acting policy on a
TensorDict, the raw gymnasium env, one row written into preallocated arrays and a batch of the same entries
drawn with ``torch.randint`` and ``index_select``, in a bare Python loop (no collector, no Trainer, no replay
buffer, no update). What the framework adds is the difference. Results:
``benchmarks/results/host_overhead.{md,json}``.

    python benchmarks/host_overhead.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from bench_utils import (
    ACTOR_ARCH,
    BATCH_SIZE,
    ENV_ID,
    POLICY_DELAY,
    RESULTS_DIR,
    log,
    machine_info,
    machine_markdown,
    median,
    pin_threads,
    write_results,
)
from tensordict import TensorDict, TensorDictBase

from crossq_trl import ActingPolicy, CrossQ
from crossq_trl.training.collector import CrossQCollector
from crossq_trl.training.lean_gym_env import LeanGymEnv
from crossq_trl.training.trainer import CrossQTrainer
from crossq_trl.training.update import CrossQUpdate

TIMED = {  # part -> (class, method); inclusive times
    "policy": (ActingPolicy, "forward"),
    "rollout": (LeanGymEnv, "buffered_rollout"),
    "collector": (CrossQCollector, "rollout"),
    "replay write": (CrossQTrainer, "_store"),
    "replay sample": (CrossQTrainer, "_sample"),
    "update": (CrossQUpdate, "__call__"),
}


@contextmanager
def timed_methods(totals: dict[str, float]) -> Iterator[None]:
    """Wrap the methods of ``TIMED`` so that each call adds its duration to ``totals[part]``."""
    originals = {part: getattr(cls, name) for part, (cls, name) in TIMED.items()}

    def timer(part: str, method: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                totals[part] += time.perf_counter() - start

        return wrapper

    for part, (cls, name) in TIMED.items():
        setattr(cls, name, timer(part, originals[part]))
    try:
        yield
    finally:
        for part, (cls, name) in TIMED.items():
            setattr(cls, name, originals[part])


@contextmanager
def stand_in_update() -> Iterator[None]:
    """``CrossQUpdate.__call__`` replaced by one that writes zero priorities and returns the last metrics."""
    original = CrossQUpdate.__call__
    metrics: list[TensorDictBase] = []  # those of one real update, returned by every call

    def stand_in(self: CrossQUpdate, batch: TensorDictBase) -> TensorDictBase:
        if not metrics:
            metrics.append(original(self, batch))
        self.num_updates += 1
        batch.set(self.loss.tensor_keys.priority, torch.zeros(batch.shape[0]))
        return metrics[0].clone()

    CrossQUpdate.__call__ = stand_in
    try:
        yield
    finally:
        CrossQUpdate.__call__ = original


def parts_per_step(totals: dict[str, float], wall: float, steps: int) -> dict[str, float]:
    """Each part's own time per env step, in microseconds (nested parts subtracted)."""
    own = {
        "acting policy": totals["policy"],
        "env step and rollout bookkeeping": totals["rollout"] - totals["policy"],
        "collector (rest)": totals["collector"] - totals["rollout"],
        "replay write and NaN check": totals["replay write"],
        "replay sample": totals["replay sample"],
        "TorchRL Trainer loop and hooks (rest)": wall
        - totals["collector"]
        - totals["replay write"]
        - totals["replay sample"]
        - totals["update"],
    }
    per_step = {part: 1e6 * seconds / steps for part, seconds in own.items()}
    per_step["host total"] = sum(per_step.values())
    per_step["update"] = 1e6 * totals["update"] / steps
    return per_step


def measure(model: CrossQ, steps: int) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    with timed_methods(totals):
        start = time.perf_counter()
        model.learn(steps, reset_num_timesteps=False)
        wall = time.perf_counter() - start
    result = parts_per_step(totals, wall, steps)
    result["env steps/s"] = steps / wall
    return result


def measure_without_framework(model: CrossQ, steps: int, seed: int) -> dict[str, float]:
    """The per-step work of the learning phase in a bare loop: ``model``'s acting policy on a TensorDict whose
    observation is copied in, a step of the raw gymnasium env, the transition written as one row of preallocated
    arrays (observation, action, next observation, reward, terminated, done), and a batch of those entries drawn
    uniformly with replacement. Times per env step, in microseconds, with the parts of :func:`parts_per_step`."""
    policy, env = model.acting_policy, gym.make(ENV_ID)
    observation, _ = env.reset(seed=seed)
    obs_dim, act_dim = observation.shape[0], env.action_space.shape[0]
    capacity = steps + 1
    # observation, action, next observation, reward; terminated, done
    stored = [torch.zeros(capacity, width) for width in (obs_dim, act_dim, obs_dim, 1)]
    stored += [torch.zeros(capacity, 1, dtype=torch.bool) for _ in range(2)]
    rows = [tensor.numpy() for tensor in stored]
    carrier = TensorDict({"observation": torch.zeros(obs_dim)}, [])
    carrier_observation = carrier.get("observation").numpy()
    acting = env_step = write = sample = 0.0
    start = time.perf_counter()
    for i in range(steps):
        t0 = time.perf_counter()
        carrier_observation[:] = observation
        action = policy(carrier).get("action").numpy()
        t1 = time.perf_counter()
        next_observation, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            next_start, _ = env.reset()
        t2 = time.perf_counter()
        values = (observation, action, next_observation, reward, terminated, terminated or truncated)
        for row, value in zip(rows, values, strict=True):
            row[i] = value
        t3 = time.perf_counter()
        index = torch.randint(i + 1, (BATCH_SIZE,))
        for tensor in stored:
            torch.index_select(tensor, 0, index)
        t4 = time.perf_counter()
        observation = next_start if terminated or truncated else next_observation
        acting, env_step, write, sample = acting + t1 - t0, env_step + t2 - t1, write + t3 - t2, sample + t4 - t3
    wall = time.perf_counter() - start
    env.close()
    # the bare loop's times as the wrapped methods' inclusive totals: no collector, Trainer or update around them
    totals = {
        "policy": acting,
        "rollout": acting + env_step,
        "collector": acting + env_step,
        "replay write": write,
        "replay sample": sample,
        "update": 0.0,
    }
    result = parts_per_step(totals, wall, steps)
    result["env steps/s"] = steps / wall
    return result


def markdown_report(info: dict[str, Any], results: dict[str, dict[str, float]], args, cmd: str) -> str:
    parts = [key for key in next(iter(results.values())) if key not in ("update", "host total", "env steps/s")]
    lines = [
        "# Host time per env step in the learning phase (microseconds)",
        "",
        f"Command: `{cmd}`",
        "",
        machine_markdown(info),
        "",
        f"{ENV_ID}, one env, one update per env step, critic [{args.critic}, {args.critic}], actor "
        f"{list(ACTOR_ARCH)}, batch {BATCH_SIZE}, policy_delay {POLICY_DELAY}; {args.steps} learning steps timed after "
        f"{args.learning_starts} random steps and the compile, per mode and round; medians over {args.rounds} "
        "alternating rounds. `real update`: host time is wall time minus the "
        "update's; `stand-in update`: the update replaced by one that only writes priorities (host work alone, "
        "warm caches); `same work, no framework`: this machine's floor, the acting policy, the raw env, a row write "
        "and a batch gather in a bare loop (its `rest` row is the loop itself).",
        "",
        "| part | " + " | ".join(results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for part in [*parts, "host total", "update"]:
        lines.append(f"| {part} | " + " | ".join(f"{result[part]:.0f}" for result in results.values()) + " |")
    lines.append("| env steps/s | " + " | ".join(f"{r['env steps/s']:.1f}" for r in results.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--critic", type=int, default=256, help="critic width (2 layers)")
    parser.add_argument("--steps", type=int, default=2000, help="timed learning steps, per measurement")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads, and CPUs the process is pinned to")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements per mode (medians)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output directory")
    parser.add_argument("--name", default="host_overhead", help="output file stem")
    args = parser.parse_args(argv)
    pin_threads(args.threads)

    info = machine_info()
    model = CrossQ(
        "MlpPolicy",
        ENV_ID,
        learning_rate=1e-3,
        buffer_size=args.learning_starts + 2 * args.rounds * args.steps + 1000,
        learning_starts=args.learning_starts,
        batch_size=BATCH_SIZE,
        policy_delay=POLICY_DELAY,
        policy_kwargs={"net_arch": {"pi": list(ACTOR_ARCH), "qf": [args.critic, args.critic]}},
        seed=args.seed,
    )
    log(f"random phase and compile: {args.learning_starts} + {4 * POLICY_DELAY} steps")
    model.learn(args.learning_starts + 4 * POLICY_DELAY)
    modes = ("real update", "stand-in update", "same work, no framework")
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for round_index in range(args.rounds):
        for mode, runs_of_mode in runs.items():
            log(f"round {round_index + 1}/{args.rounds}, {mode}: {args.steps} steps")
            if mode == "same work, no framework":
                runs_of_mode.append(measure_without_framework(model, args.steps, args.seed + round_index))
                continue
            with stand_in_update() if mode == "stand-in update" else nullcontext():
                runs_of_mode.append(measure(model, args.steps))
    results = {
        mode: {key: median([run[key] for run in mode_runs]) for key in mode_runs[0]} for mode, mode_runs in runs.items()
    }
    info["loadavg_end"] = os.getloadavg()
    cmd = ("python benchmarks/host_overhead.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    report = markdown_report(info, results, args, cmd)
    print(report)
    write_results(args.name, report, {"command": cmd, "machine": info, "results": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
