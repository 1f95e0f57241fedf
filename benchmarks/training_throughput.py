"""End-to-end training throughput: env steps/s of crossq_trl's, sb3-contrib's and SBX's CrossQ on HalfCheetah-v5.

All train with the same settings (actor [256, 256], critic ``--critics``, batch 256, policy_delay 3, one gradient
update per env step after ``learning_starts`` uniform-random steps, no evaluation), one after the other in one
process pinned to ``--threads`` CPUs, alternating implementation by implementation (``--repeats`` times). Each run
is two ``learn`` calls, the same for every implementation:

- the random phase, ``learn(learning_starts - 1)`` as two calls: env, collection and replay writes only (one step
  short, since crossq_trl runs its first update on the step that reaches ``learning_starts``). The first call, of
  ``SETUP_STEPS`` steps, carries the set-up (buffers, collector; crossq_trl's collector runs its policy once, which
  compiles it), reported apart; the rate is that of the second call;
- the learning phase, ``learn(total - learning_starts, reset_num_timesteps=False)`` with a callback recording time,
  env steps and updates after every step. Its rate is measured from the end of the first ``--warmup-updates``
  updates (crossq_trl's ``torch.compile`` and SBX's ``jax.jit`` happen there, reported as warm-up) to the end.

Results: ``benchmarks/results/training_throughput.{md,json}``, with the ratios of crossq_trl to each peer.

    python benchmarks/training_throughput.py --threads 1                     # critic [1024, 1024] and [256, 256]
    python benchmarks/training_throughput.py --threads 1 --critics 256 --repeats 2 --total-steps 5000
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

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

SETUP_STEPS = 500  # the random phase's first learn call, set-up included
NAMES = {"crossq_trl": "crossq_trl (compiled)", "sb3_contrib": "sb3-contrib", "sbx": "SBX (JAX jit)"}


def common_kwargs(critic: int, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "learning_rate": 1e-3,
        "buffer_size": args.total_steps,
        "learning_starts": args.learning_starts,
        "batch_size": BATCH_SIZE,
        "train_freq": 1,
        "gradient_steps": 1,
        "policy_delay": POLICY_DELAY,
        "policy_kwargs": {"net_arch": {"pi": list(ACTOR_ARCH), "qf": [critic, critic]}},
        "seed": args.seed,
        "device": args.device,
        "verbose": 0,
    }


def learning_rates(records: list[tuple[float, int, int]], start: float, warmup_updates: int) -> dict[str, float]:
    """Rates of the learning phase from per-step records ``(time, env steps, updates)`` and its start time."""
    warm = next((r for r in records if r[2] >= warmup_updates), records[-1])
    end = records[-1]
    first_steps = records[0][1] - 1
    return {
        "learning_steps_per_s": (end[1] - warm[1]) / (end[0] - warm[0]),
        "learning_steps_per_s_with_warmup": (end[1] - first_steps) / (end[0] - start),
        "warmup_s": warm[0] - start,
        "steps": end[1],
        "updates": end[2],
    }


def two_phase_run(model, args: argparse.Namespace, learn_callback, records) -> dict[str, Any]:
    """The random phase (set-up, then ``learn`` timed), then the learning phase with ``learn_callback`` recording
    every step."""
    random_steps = args.learning_starts - 1
    setup_steps = min(SETUP_STEPS, random_steps // 2)
    begin = time.perf_counter()
    model.learn(total_timesteps=setup_steps)
    setup_end = time.perf_counter()
    model.learn(total_timesteps=random_steps - setup_steps, reset_num_timesteps=False)
    random_end = time.perf_counter()
    model.learn(total_timesteps=args.total_steps - random_steps, callback=learn_callback, reset_num_timesteps=False)
    result = learning_rates(records, random_end, args.warmup_updates)
    result.update(
        random_phase_steps_per_s=(random_steps - setup_steps) / (random_end - setup_end),
        setup_s=setup_end - begin,
        wall_s=time.perf_counter() - begin,
    )
    return result


def run_crossq_trl(critic: int, args: argparse.Namespace) -> dict[str, Any]:
    from torch._dynamo.utils import counters

    from crossq_trl import CrossQ

    records: list[tuple[float, int, int]] = []
    model = CrossQ("MlpPolicy", ENV_ID, **common_kwargs(critic, args))

    def callback(model: CrossQ) -> None:
        records.append((time.perf_counter(), model.num_timesteps, model.update.num_updates))

    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    result = two_phase_run(model, args, callback, records)
    result.update(
        compiled_graphs=counters["stats"]["unique_graphs"] - graphs,
        graph_breaks=sum(counters["graph_break"].values()) - breaks,
    )
    return result


def run_sb3_style(module: str, critic: int, args: argparse.Namespace) -> dict[str, Any]:
    """sb3-contrib's or SBX's CrossQ (the same API), with an sb3 callback recording every step."""
    import importlib

    from stable_baselines3.common.callbacks import BaseCallback

    records: list[tuple[float, int, int]] = []

    class Timer(BaseCallback):
        def _on_step(self) -> bool:
            records.append((time.perf_counter(), self.num_timesteps, self.model._n_updates))
            return True

    model = importlib.import_module(module).CrossQ("MlpPolicy", ENV_ID, **common_kwargs(critic, args))
    return two_phase_run(model, args, Timer(), records)


RUNNERS = {
    "crossq_trl": run_crossq_trl,
    "sb3_contrib": lambda critic, args: run_sb3_style("sb3_contrib", critic, args),
    "sbx": lambda critic, args: run_sb3_style("sbx", critic, args),
}


def markdown_report(info: dict[str, Any], results: dict[int, dict[str, list]], args, cmd: str) -> str:
    lines = [
        "# CrossQ training throughput (env steps/s)",
        "",
        f"Command: `{cmd}`",
        "",
        machine_markdown(info),
        "",
        f"{ENV_ID}, {args.total_steps} steps, learning_starts {args.learning_starts} (uniform random actions), one "
        f"update per env step after that, batch {BATCH_SIZE}, actor [256, 256], policy_delay {POLICY_DELAY}, no "
        "evaluation, the process pinned to the torch threads' CPUs (XLA's thread pool ignores its flags). "
        f"`random phase`: `learn(learning_starts - 1)` without its first {SETUP_STEPS} steps, whose call carries the "
        "set-up (`set-up (s)`: buffers, collector; crossq_trl's collector runs its policy once, compiling it). "
        "`learning phase`: from the end of the first "
        f"{args.warmup_updates} updates (compilation, jit) to the end; `warm-up`: time of those first updates. "
        f"Medians over {args.repeats} alternating repeat(s); ratios of crossq_trl to each peer.",
        "",
    ]
    for critic, per_impl in results.items():
        lines += [
            f"## critic [{critic}, {critic}]",
            "",
            "| implementation | learning phase | with warm-up | warm-up (s) | random phase | set-up (s) | wall (s) "
            "| graphs compiled / breaks |",
            "|---|---|---|---|---|---|---|---|",
        ]
        summary: dict[str, dict[str, float]] = {}
        for key, runs in per_impl.items():
            row = {name: median([r[name] for r in runs]) for name in runs[0] if isinstance(runs[0][name], float)}
            summary[key] = row
            graphs = (
                f"{median([r['compiled_graphs'] for r in runs]):.0f} / {median([r['graph_breaks'] for r in runs]):.0f}"
                if "compiled_graphs" in runs[0]
                else "-"
            )
            lines.append(
                f"| {NAMES[key]} | {row['learning_steps_per_s']:.2f} | {row['learning_steps_per_s_with_warmup']:.2f} "
                f"| {row['warmup_s']:.1f} | {row['random_phase_steps_per_s']:.0f} | {row['setup_s']:.1f} "
                f"| {row['wall_s']:.1f} | {graphs} |"
            )
        if "crossq_trl" in summary:
            ours = summary["crossq_trl"]
            for key in summary.keys() - {"crossq_trl"}:
                learning = ours["learning_steps_per_s"] / summary[key]["learning_steps_per_s"]
                random = ours["random_phase_steps_per_s"] / summary[key]["random_phase_steps_per_s"]
                ratios = f"learning phase {learning:.2f}x, random phase {random:.2f}x"
                lines.append(f"\ncrossq_trl / {NAMES[key]}: {ratios}.")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--critics", type=int, nargs="+", default=[1024, 256], help="critic widths (2 layers)")
    parser.add_argument("--total-steps", type=int, default=5000)
    parser.add_argument("--learning-starts", type=int, default=2000)
    parser.add_argument("--warmup-updates", type=int, default=2 * POLICY_DELAY, help="updates left out of the rate")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs per implementation")
    parser.add_argument("--impls", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="device of every implementation (JAX: its default device)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, and CPUs the process is pinned to")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output directory")
    parser.add_argument("--name", default="training_throughput", help="output file stem")
    args = parser.parse_args(argv)
    if args.total_steps <= args.learning_starts + args.warmup_updates:
        parser.error("--total-steps must exceed --learning-starts plus --warmup-updates")
    pin_threads(args.threads)

    info = machine_info()
    log(f"{info['cpu_model']}, {info['logical_cpus']} CPUs, torch threads {torch.get_num_threads()}")
    results: dict[int, dict[str, list]] = {}
    for critic in args.critics:
        results[critic] = {key: [] for key in args.impls}
        for repeat in range(args.repeats):
            order = args.impls if repeat % 2 == 0 else args.impls[::-1]
            for key in order:
                gc.collect()
                log(f"critic [{critic}, {critic}] {key} (repeat {repeat + 1}/{args.repeats})")
                result = RUNNERS[key](critic, args)
                result["loadavg"] = os.getloadavg()
                results[critic][key].append(result)
                log(
                    f"  learning {result['learning_steps_per_s']:.2f} steps/s, warm-up {result['warmup_s']:.1f}s, "
                    f"random phase {result['random_phase_steps_per_s']:.0f} steps/s, wall {result['wall_s']:.1f}s"
                )
    info["loadavg_end"] = os.getloadavg()
    cmd = ("python benchmarks/training_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    report = markdown_report(info, results, args, cmd)
    print(report)
    payload = {"command": cmd, "machine": info, "settings": vars(args) | {"out": str(args.out)}, "results": results}
    write_results(args.name, report, payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
