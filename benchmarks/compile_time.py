"""Compile time of crossq_trl's update and acting policy, cold (empty compile caches) and warm (caches filled by the
cold run), for the default networks (actor [256, 256], critic [1024, 1024]) and for [256, 256] critics.

Each measurement runs in a fresh Python process. Cold is a machine that never compiled this: ``TORCHINDUCTOR_CACHE_DIR``
and ``TMPDIR`` point at a new directory, the latter because Inductor keeps its precompiled C++ headers (a few
seconds to build, once per machine) in the system temp dir, outside its cache. Warm reuses what the cold run left
there: Inductor's compiled kernels and FX graphs are cached on disk across runs, Dynamo's tracing is redone in every
process. Measured: the first critic update, the first actor update (the two graphs of ``CrossQUpdate``) and the
first compiled action (``ActingPolicy(compile=True)``).

    python benchmarks/compile_time.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_utils import RESULTS_DIR, log, machine_info, machine_markdown, write_results

CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
from torchrl.data import Bounded, Composite, Unbounded
from tensordict import TensorDict
from crossq_trl import ActingPolicy, CrossQLoss, CrossQUpdate, make_crossq_actor, make_crossq_critic
from crossq_trl import make_crossq_optimizers

critic = int(sys.argv[1])
specs = {"observation_spec": Composite(observation=Unbounded((17,))), "action_spec": Bounded(-1.0, 1.0, (6,))}
actor = make_crossq_actor(**specs)
loss = CrossQLoss(actor, make_crossq_critic(**specs, net_arch=[critic, critic]))
loss.make_value_estimator(gamma=0.99)
update = CrossQUpdate(loss, make_crossq_optimizers(loss), policy_delay=2)
batch = TensorDict({"observation": torch.randn(256, 17), "action": torch.rand(256, 6) * 2 - 1,
                    ("next", "observation"): torch.randn(256, 17), ("next", "reward"): torch.randn(256, 1),
                    ("next", "done"): torch.zeros(256, 1, dtype=torch.bool),
                    ("next", "terminated"): torch.zeros(256, 1, dtype=torch.bool)}, [256])
times = {}
start = time.perf_counter(); update(batch); times["critic_update_s"] = time.perf_counter() - start
start = time.perf_counter(); update(batch); times["actor_update_s"] = time.perf_counter() - start
policy = ActingPolicy(actor.eval(), compile=True)
observation = TensorDict({"observation": torch.randn(17)}, [])
start = time.perf_counter(); policy(observation); times["acting_s"] = time.perf_counter() - start
print(json.dumps(times))
"""


def measure(critic: int, threads: int, cache_dir: str) -> dict[str, float]:
    """The child's compile times with Inductor's cache and precompiled headers under ``cache_dir``."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": os.path.join(cache_dir, "inductor"), "TMPDIR": cache_dir}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(critic), str(threads)], env=env, capture_output=True, text=True, check=True
    )
    times = json.loads(out.stdout.strip().splitlines()[-1])
    times["total_s"] = sum(times.values())
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--critics", type=int, nargs="+", default=[1024, 256])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the measured process")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    info = machine_info()
    rows = {}
    for critic in args.critics:
        with tempfile.TemporaryDirectory(prefix="crossq_compile_cache_") as cache:
            cold = measure(critic, args.threads, cache)
            warm = measure(critic, args.threads, cache)
        rows[critic] = {"cold": cold, "warm": warm}
        log(f"critic [{critic}, {critic}]: cold {cold['total_s']:.1f} s, warm {warm['total_s']:.1f} s")
    cmd = ("python benchmarks/compile_time.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    lines = [
        "# Compile time of crossq_trl (seconds)",
        "",
        f"Command: `{cmd}`",
        "",
        machine_markdown(info),
        "",
        "Fresh process per measurement; cold: a machine that never compiled this (empty Inductor cache, no "
        "precompiled C++ headers), warm: what the cold run left (Dynamo traces again in every process). Actor "
        "[256, 256]; first critic update, first actor update, first compiled action.",
        "",
        "| critic | cache | critic update | actor update | acting | total |",
        "|---|---|---|---|---|---|",
    ]
    for critic, row in rows.items():
        for kind in ("cold", "warm"):
            t = row[kind]
            lines.append(
                f"| [{critic}, {critic}] | {kind} | {t['critic_update_s']:.1f} | {t['actor_update_s']:.1f} "
                f"| {t['acting_s']:.1f} | {t['total_s']:.1f} |"
            )
    report = "\n".join(lines) + "\n"
    print(report)
    write_results("compile_time", report, {"command": cmd, "machine": info, "results": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
