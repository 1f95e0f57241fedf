"""Memory of a 1M-transition replay buffer with HalfCheetah's shapes (observation 17, action 6), stored plainly
and with ``optimize_memory_usage=True`` (each observation once), and the cost of writing and sampling.

Each mode is filled in a fresh process with 1000 episodes of 1000 steps (truncated, as HalfCheetah's time
limit), and reports the bytes of its tensors and the growth of the process's resident memory. Timings (one
transition written, one batch of 256 sampled, as in a training step) are measured side by side in one process
on smaller buffers.

    python benchmarks/replay_memory.py --output benchmarks/results/replay_memory.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from tensordict import TensorDict

OBS_DIM, ACTION_DIM, EPISODE = 17, 6, 1000


def episode(generator: torch.Generator) -> TensorDict:
    observations = torch.randn(EPISODE + 1, OBS_DIM, generator=generator)
    done = torch.zeros(EPISODE, 1, dtype=torch.bool)
    done[-1] = True  # truncated by the time limit: not terminated
    return TensorDict(
        {
            "observation": observations[:-1],
            "action": torch.rand(EPISODE, ACTION_DIM, generator=generator) * 2 - 1,
            ("next", "observation"): observations[1:],
            ("next", "reward"): torch.randn(EPISODE, 1, generator=generator),
            ("next", "done"): done,
            ("next", "terminated"): torch.zeros(EPISODE, 1, dtype=torch.bool),
        },
        [EPISODE],
    )


def resident_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * 4096


def make_buffer(size: int, optimize: bool, prioritized: bool = False):
    from torchrl.data import PrioritizedSampler

    from crossq_trl.replay import build_replay_buffer

    options = (PrioritizedSampler, {"alpha": 0.6, "beta": 0.4}) if prioritized else (None, None)
    return build_replay_buffer(*options, buffer_size=size, batch_size=256, optimize_memory_usage=optimize)


def storage_bytes(replay_buffer) -> int:
    storage = replay_buffer._storage
    if hasattr(storage, "nbytes"):
        return storage.nbytes()
    return sum(t.numel() * t.element_size() for t in storage._storage.values(True, True))


def measure_memory(size: int, optimize: bool) -> dict:
    """Run in a fresh process: fill a buffer of ``size`` transitions, report its bytes."""
    generator = torch.Generator().manual_seed(0)
    replay_buffer = make_buffer(size, optimize)
    replay_buffer.extend(episode(generator))  # allocates the storage
    before = resident_bytes()
    for _ in range(size // EPISODE - 1):
        replay_buffer.extend(episode(generator))
    return {
        "transitions": len(replay_buffer),
        "tensor_bytes": storage_bytes(replay_buffer),
        "resident_growth_bytes": resident_bytes() - before,
    }


def measure_speed(size: int, repeats: int) -> dict:
    """Write one transition, sample one batch and (prioritized) write its priorities back, alternating the
    buffers (median microseconds)."""
    generator = torch.Generator().manual_seed(1)
    buffers = {
        "plain": make_buffer(size, False),
        "optimized": make_buffer(size, True),
        "plain, prioritized": make_buffer(size, False, prioritized=True),
    }
    for _ in range(size // EPISODE):
        data = episode(generator)
        for replay_buffer in buffers.values():
            replay_buffer.extend(data.clone())
    step = episode(generator)
    times = {name: {"extend": [], "sample": [], "priorities": []} for name in buffers}
    for i in range(repeats):
        for name, replay_buffer in buffers.items():
            start = time.perf_counter()
            replay_buffer.extend(step[i % EPISODE : i % EPISODE + 1])
            middle = time.perf_counter()
            batch = replay_buffer.sample()
            end = time.perf_counter()
            batch.set("td_error", torch.rand(256, generator=generator))
            replay_buffer.update_tensordict_priority(batch)
            times[name]["priorities"].append(time.perf_counter() - end)
            times[name]["extend"].append(middle - start)
            times[name]["sample"].append(end - middle)
    return {
        name: {kind: 1e6 * sorted(values)[len(values) // 2] for kind, values in kinds.items()}
        for name, kinds in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--speed-size", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--output", default=None)
    parser.add_argument("--child", choices=["plain", "optimized"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child is not None:
        print(json.dumps(measure_memory(args.size, args.child == "optimized")))
        return
    memory = {}
    for mode in ("plain", "optimized"):
        command = [sys.executable, __file__, "--size", str(args.size), "--child", mode]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        memory[mode] = json.loads(output.strip().splitlines()[-1])  # after TorchRL's log lines
    speed = measure_speed(args.speed_size, args.repeats)
    mib = 2**20
    lines = [
        f"# Replay buffer memory: {args.size:,} transitions, observation {OBS_DIM}, action {ACTION_DIM} (float32)",
        "",
        f"Command: `python benchmarks/replay_memory.py --size {args.size} --speed-size {args.speed_size} "
        f"--repeats {args.repeats}`; episodes of {EPISODE} steps (truncated).",
        "",
        "| mode | tensors (MiB) | resident growth while filling (MiB) | bytes / transition |",
        "|---|---|---|---|",
    ]
    for mode, result in memory.items():
        lines.append(
            f"| {mode} | {result['tensor_bytes'] / mib:.1f} | {result['resident_growth_bytes'] / mib:.1f} | "
            f"{result['tensor_bytes'] / result['transitions']:.1f} |"
        )
    ratio = memory["optimized"]["tensor_bytes"] / memory["plain"]["tensor_bytes"]
    lines += [
        "",
        f"optimized / plain: {ratio:.2f} of the tensor bytes.",
        "",
        f"Per training step on a {args.speed_size:,}-transition buffer (median of {args.repeats}, alternating, "
        "one thread; the plain buffer takes CrossQReplayBuffer's fast path, the others TorchRL's generic path):",
        "",
        "| buffer | write 1 transition (us) | sample 256 (us) | write 256 priorities back (us) |",
        "|---|---|---|---|",
    ]
    for mode, result in speed.items():
        priorities = f"{result['priorities']:.0f}" if "prioritized" in mode else "-"
        lines.append(f"| {mode} | {result['extend']:.0f} | {result['sample']:.0f} | {priorities} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        with open(args.output, "w") as file:
            file.write(text)


if __name__ == "__main__":
    main()
