"""Distributed collection: throughput with 1 vs 2 Ray workers, a scaling model, and a learning check.

Needs the extra: ``pip install -e '.[ray]'``. Three parts, each writing JSON into ``--out``:

``throughput``: in one process with one local Ray (``num_cpus = cores``), alternating local collection and 1 and 2
Ray workers, Pendulum-v1 with actor and critic [256, 256]: env steps/s of collection alone (the acting policy,
no learner) and, in training after ``learning_starts``, env steps/s and updates/s. It also measures the per-batch
costs the scaling model uses: a worker's time per env step, the Ray round trip of a batch, one weight push, one
update.

``model``: the synchronous 1-learner / N-worker model from those costs (see ``scaling_model``), as a table.

``learning``: Pendulum-v1 trained with local collection (1 env, ``train_freq=1``, ``gradient_steps=1``) and with 2
Ray workers (``train_freq=1`` each, ``gradient_steps=2``: the same one update per env step), same seeds, then 10
deterministic evaluation episodes.

    python benchmarks/distributed.py throughput model --threads 1
    python benchmarks/distributed.py learning --seeds 0 1 2 --steps 5000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "distributed"
NET = {"net_arch": [256, 256]}


def _model(workers: int, **options):
    from crossq_trl import CrossQ

    options = {"collector_workers": workers, "seed": 0, **NET, **options}
    return CrossQ("MlpPolicy", "Pendulum-v1", **options)


def collection_rate(workers: int, steps: int, frames_per_worker: int) -> float:
    """Env steps/s of the acting policy alone: 0 workers is CrossQCollector in this process."""
    from crossq_trl import ActingPolicy, make_env
    from crossq_trl.distributed import make_distributed_collector
    from crossq_trl.training.collector import CrossQCollector

    model = _model(workers, compile=False, learning_starts=0)
    policy = ActingPolicy(model.actor)
    if workers == 0:
        collector = CrossQCollector(
            make_env("Pendulum-v1", seed=0),
            policy,
            frames_per_batch=frames_per_worker,
            total_frames=steps,
            auto_register_policy_transforms=False,
        )
    else:
        collector = make_distributed_collector(
            "Pendulum-v1", policy, num_workers=workers, frames_per_worker=frames_per_worker, total_frames=steps
        )
        collector.update_policy_weights_()
    iterator = iter(collector)
    next(iterator)  # start-up excluded
    start, frames = time.perf_counter(), 0
    for batch in iterator:
        frames += batch.numel()
    rate = frames / (time.perf_counter() - start)
    collector.shutdown()
    return rate


def training_rate(workers: int, steps: int, learning_starts: int, train_freq: int) -> dict[str, float]:
    """Env steps/s and updates/s of a training run after learning_starts (compiled update, one update per step)."""
    model = _model(
        workers,
        learning_starts=learning_starts,
        train_freq=train_freq,
        gradient_steps=-1,
        policy_delay=3,
    )
    marks = {}

    def mark(model) -> None:
        if model.num_timesteps >= learning_starts + 200 and "start" not in marks:  # compilation excluded
            marks["start"] = (time.perf_counter(), model.num_timesteps, model.update.num_updates)

    model.learn(steps, callback=mark)
    elapsed = time.perf_counter() - marks["start"][0]
    return {
        "env_steps_per_s": (model.num_timesteps - marks["start"][1]) / elapsed,
        "updates_per_s": (model.update.num_updates - marks["start"][2]) / elapsed,
    }


def batch_costs(frames_per_worker: int) -> dict[str, float]:
    """Seconds: a worker's env step + action, the Ray round trip of a batch, one weight push, one update."""
    import ray

    from crossq_trl import ActingPolicy, make_env
    from crossq_trl.distributed import make_distributed_collector

    model = _model(1, compile=True)
    policy = ActingPolicy(model.actor)
    collector = make_distributed_collector(
        "Pendulum-v1", policy, num_workers=1, frames_per_worker=frames_per_worker, total_frames=10**9
    )
    collector.update_policy_weights_()
    worker = collector.remote_collectors[0]
    ray.get(worker.next.remote())
    start = time.perf_counter()
    for _ in range(20):
        ray.get(worker.next.remote())
    per_batch = (time.perf_counter() - start) / 20
    start = time.perf_counter()
    for _ in range(20):
        collector.update_policy_weights_()
    push = (time.perf_counter() - start) / 20
    collector.shutdown()
    step = 1.0 / collection_rate(0, 2000, frames_per_worker)  # the workers' loop, run here: env step + action
    buffer = model.replay_buffer  # updates on batches of random transitions
    buffer.extend(make_env("Pendulum-v1", seed=0).rollout(1000).select(*model.loss_module.in_keys))
    for _ in range(20):
        model.update(buffer.sample())
    start = time.perf_counter()
    for _ in range(200):
        model.update(buffer.sample())
    update = (time.perf_counter() - start) / 200
    return {
        "step_s": step,
        "round_trip_s": max(per_batch - frames_per_worker * step, 0.0),
        "push_s": push,
        "update_s": update,
        "frames_per_worker": frames_per_worker,
    }


def scaling_model(costs: dict[str, float], workers: int, utd: float, push_every_batch: bool = True) -> float:
    """Env steps/s of the synchronous setup: a batch is F steps on each of N workers in parallel (F * step), one
    round trip, then N * F * utd updates on the learner and a push; nothing overlaps, so

        steps/s = N F / (F step + rtt + push + N F utd update)  ->  1 / (utd * update) as N grows.
    """
    f = costs["frames_per_worker"]
    batch = f * costs["step_s"] + costs["round_trip_s"] + (costs["push_s"] if push_every_batch else 0.0)
    return workers * f / (batch + workers * f * utd * costs["update_s"])


def run_throughput(args) -> None:
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    out = {"cores": os.cpu_count(), "threads": args.threads, "collection": {}, "training": {}}
    for repeat in range(args.repeats):
        for workers in (0, 1, 2):
            rate = collection_rate(workers, args.collect_steps, args.train_freq)
            out["collection"].setdefault(str(workers), []).append(rate)
            print(f"[{repeat}] collection, {workers} workers: {rate:.0f} env steps/s", flush=True)
        for workers in (0, 1, 2):
            freq = args.train_freq if workers == 0 else max(1, args.train_freq // workers)
            rates = training_rate(workers, args.train_steps, args.learning_starts, freq)
            out["training"].setdefault(str(workers), []).append(rates)
            print(f"[{repeat}] training, {workers} workers: {rates}", flush=True)
    out["costs"] = batch_costs(args.train_freq)
    print("costs", out["costs"], flush=True)
    (args.out / "throughput.json").write_text(json.dumps(out, indent=1))
    ray.shutdown()


def run_model(args) -> None:
    costs = json.loads((args.out / "throughput.json").read_text())["costs"]
    rows = ["| workers | env steps/s, UTD 1 | env steps/s, UTD 1/4 | env steps/s, UTD 1/16 |", "|---|---|---|---|"]
    for workers in (1, 2, 4, 8, 16, 32, 64, 128):
        rates = [scaling_model(costs, workers, utd) for utd in (1, 0.25, 1 / 16)]
        rows.append(f"| {workers} | " + " | ".join(f"{rate:.0f}" for rate in rates) + " |")
    caps = ", ".join(f"UTD {utd}: {1 / (utd * costs['update_s']):.0f}" for utd in (1, 0.25, 1 / 16))
    text = "\n".join(rows) + f"\n\nlimits as N grows (1 / (UTD x update time)): {caps}\n"
    (args.out / "scaling_model.md").write_text(text)
    print(text)


def run_learning(args) -> None:
    import ray

    from crossq_trl import evaluate_policy, make_env

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    results = []
    for seed in args.seeds:
        for workers in (0, 2):
            options = {"train_freq": 1, "gradient_steps": max(workers, 1)}
            model = _model(
                workers, seed=seed, net_arch=[64, 64], batch_size=128, policy_delay=2, learning_starts=200, **options
            )
            start = time.perf_counter()
            model.learn(args.steps)
            elapsed = time.perf_counter() - start
            returns, _ = evaluate_policy(make_env("Pendulum-v1", seed=seed + 10_000), model.actor, n_episodes=10)
            result = {"seed": seed, "workers": workers, "return": returns.mean().item(), "train_s": elapsed}
            results.append(result)
            print(result, flush=True)
            (args.out / "learning.json").write_text(json.dumps({"steps": args.steps, "runs": results}, indent=1))
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="+", choices=["throughput", "model", "learning"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--collect-steps", type=int, default=4000)
    parser.add_argument("--train-steps", type=int, default=2400)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--train-freq", type=int, default=8, help="env steps per batch (split over the workers)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        {"throughput": run_throughput, "model": run_model, "learning": run_learning}[part](args)


if __name__ == "__main__":
    main()
