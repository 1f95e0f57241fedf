"""End-to-end training throughput: env steps/s of crossq_trl's CrossQ and sb3-contrib's CrossQ on HalfCheetah-v5.

Both train with the same settings (actor [256, 256], critic ``--critics``, batch 256, policy_delay 3, one gradient
update per env step after ``learning_starts`` uniform-random steps, no evaluation), one after the other in one
process, alternating implementation by implementation (``--repeats`` times). The rate that counts is the one of
the learning phase, measured from the moment both implementations have run their first ``--warmup-updates``
updates to the end of training: crossq_trl's ``torch.compile`` warm-up (compiling the critic and the actor
objectives on the first updates) is reported separately, and sb3-contrib gets the same exclusion. Also reported:
the rate of the random phase (env, collector and replay buffer only), the learning-phase rate with the warm-up
included, and, for crossq_trl, the graphs compiled and graph breaks during training (Dynamo counters).

Results: ``benchmarks/results/training_throughput.{md,json}``.

    python benchmarks/training_throughput.py                           # critic [1024, 1024] and [256, 256]
    python benchmarks/training_throughput.py --critics 256 --repeats 2 --total-steps 5000
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
    POLICY_DELAY,
    RESULTS_DIR,
    log,
    machine_info,
    machine_markdown,
    median,
    write_results,
)
from torch._dynamo.utils import counters

ENV_ID = "HalfCheetah-v5"
TARGET = 2.0  # crossq_trl / sb3-contrib, learning-phase env steps/s


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
        "device": "cpu",
        "verbose": 0,
    }


def phase_rates(records: list[tuple[float, int, int]], learning_starts: int, warmup_updates: int) -> dict[str, Any]:
    """Rates from per-step records ``(time, env steps, updates)``."""
    first = records[0]
    start = next(r for r in records if r[1] >= learning_starts)
    warm = next((r for r in records if r[2] >= warmup_updates), records[-1])
    end = records[-1]

    def rate(a, b):
        return (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else float("nan")

    return {
        "random_phase_steps_per_s": rate(first, start),
        "learning_steps_per_s": rate(warm, end),
        "learning_steps_per_s_with_warmup": rate(start, end),
        "warmup_s": warm[0] - start[0],
        "learning_s": end[0] - warm[0],
        "steps": end[1],
        "updates": end[2],
    }


def run_crossq_trl(critic: int, args: argparse.Namespace) -> dict[str, Any]:
    from crossq_trl import CrossQ

    records: list[tuple[float, int, int]] = []
    model = CrossQ("MlpPolicy", ENV_ID, compile=not args.eager, **common_kwargs(critic, args))

    def callback(model: CrossQ) -> None:
        records.append((time.perf_counter(), model.trainer.collected_frames, model.update.num_updates))

    graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    begin = time.perf_counter()
    model.learn(total_timesteps=args.total_steps, callback=callback)
    wall = time.perf_counter() - begin
    result = phase_rates(records, args.learning_starts, args.warmup_updates)
    result.update(
        wall_s=wall,
        compiled_graphs=counters["stats"]["unique_graphs"] - graphs,
        graph_breaks=sum(counters["graph_break"].values()) - breaks,
        actor_updates=model.update.num_actor_updates,
    )
    return result


def run_sb3_contrib(critic: int, args: argparse.Namespace) -> dict[str, Any]:
    from sb3_contrib import CrossQ
    from stable_baselines3.common.callbacks import BaseCallback

    records: list[tuple[float, int, int]] = []

    class Timer(BaseCallback):
        def _on_step(self) -> bool:
            records.append((time.perf_counter(), self.num_timesteps, self.model._n_updates))
            return True

    model = CrossQ("MlpPolicy", ENV_ID, **common_kwargs(critic, args))
    begin = time.perf_counter()
    model.learn(total_timesteps=args.total_steps, callback=Timer())
    wall = time.perf_counter() - begin
    result = phase_rates(records, args.learning_starts, args.warmup_updates)
    result["wall_s"] = wall
    return result


RUNNERS = {"crossq_trl": run_crossq_trl, "sb3_contrib": run_sb3_contrib}


def markdown_report(info: dict[str, Any], results: dict[int, dict[str, list]], args, cmd: str) -> str:
    ours = "crossq_trl (eager)" if args.eager else "crossq_trl (compiled)"
    names = {"crossq_trl": ours, "sb3_contrib": "sb3-contrib"}
    lines = [
        "# CrossQ training throughput (env steps/s)",
        "",
        f"Command: `{cmd}`",
        "",
        machine_markdown(info),
        "",
        f"{ENV_ID}, {args.total_steps} steps, learning_starts {args.learning_starts} (uniform random actions), one "
        f"update per env step after that, batch {BATCH_SIZE}, actor [256, 256], policy_delay {POLICY_DELAY}, no "
        f"evaluation. `learning steps/s`: from the end of the first {args.warmup_updates} updates (crossq_trl's "
        "compilation happens there) to the end; `warm-up`: time of those first updates; medians over "
        f"{args.repeats} alternating repeat(s).",
        "",
    ]
    for critic, per_impl in results.items():
        lines += [
            f"## critic [{critic}, {critic}]",
            "",
            "| implementation | learning steps/s | with warm-up | warm-up (s) | random-phase steps/s | wall (s) "
            "| graphs compiled / breaks |",
            "|---|---|---|---|---|---|---|",
        ]
        summary = {}
        for key, runs in per_impl.items():
            rate = median([r["learning_steps_per_s"] for r in runs])
            summary[key] = rate
            graphs = (
                f"{median([r['compiled_graphs'] for r in runs]):.0f} / {median([r['graph_breaks'] for r in runs]):.0f}"
                if "compiled_graphs" in runs[0]
                else "-"
            )
            with_warmup = median([r["learning_steps_per_s_with_warmup"] for r in runs])
            random_phase = median([r["random_phase_steps_per_s"] for r in runs])
            warmup, wall = median([r["warmup_s"] for r in runs]), median([r["wall_s"] for r in runs])
            lines.append(
                f"| {names[key]} | {rate:.2f} | {with_warmup:.2f} | {warmup:.1f} | {random_phase:.0f} | {wall:.1f} "
                f"| {graphs} |"
            )
        if {"crossq_trl", "sb3_contrib"} <= summary.keys():
            ratio = summary["crossq_trl"] / summary["sb3_contrib"]
            verdict = "met" if ratio >= TARGET else "not met"
            lines += ["", f"crossq_trl / sb3-contrib (learning phase): {ratio:.2f}x (target >= {TARGET}x: {verdict})."]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--critics", type=int, nargs="+", default=[1024, 256], help="critic widths (2 layers)")
    parser.add_argument("--total-steps", type=int, default=3000)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--warmup-updates", type=int, default=2 * POLICY_DELAY, help="updates left out of the rate")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs per implementation")
    parser.add_argument("--impls", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    parser.add_argument("--eager", action="store_true", help="crossq_trl without torch.compile")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output directory")
    parser.add_argument("--name", default="training_throughput", help="output file stem")
    args = parser.parse_args(argv)
    if args.total_steps <= args.learning_starts + args.warmup_updates:
        parser.error("--total-steps must exceed --learning-starts plus --warmup-updates")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

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
