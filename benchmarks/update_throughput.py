"""Gradient updates per second of CrossQ on the fixed workload of shared/REFERENCE.md, ours and the peers'.

Workload: HalfCheetah-v5 shapes (observation 17, action 6), batch 256, actor [256, 256], policy_delay 3,
critic [1024, 1024] (the default) and [256, 256]; every update's batch comes from a replay buffer of random
transitions, sampled as each library's training loop samples n gradient steps (sb3's ``train()`` one batch per update;
SBX's ``train()`` and crossq_trl's trainer all n batches in one draw), and every timed run is a whole number of
policy-delay cycles.

Measured, for each critic size:

- crossq_trl's ``CrossQUpdate``, eager and compiled (``torch.compile(fullgraph=True)`` objectives, fused Adam);
- with ``--peers``: sb3-contrib's ``CrossQ.train()``, SBX's (JAX jit) ``CrossQ.train()`` when ``sbx`` is
  importable, and TorchRL's ``torchrl.objectives.CrossQLoss`` on ``torchrl.modules.BatchRenorm1d`` MLPs (eager,
  the update of TorchRL's sota-implementations/crossq script);

all in one process, alternating run by run (rotating order) over ``--rounds`` rounds. Reported: median updates/s,
the FLOPs of one update (``FlopCounterMode`` over one full policy-delay cycle of the eager path, divided by
policy_delay; matmul FLOPs, forward and backward), the achieved GFLOP/s and its share of a float32 sgemm peak
measured in the same run with the same thread count, and the ratios ours/peer (median of the round-by-round
ratios of runs measured back to back). Results: ``benchmarks/results/update_throughput.{md,json}``.

    python benchmarks/update_throughput.py --peers                 # ~5-8 minutes on 2 cores
    python benchmarks/update_throughput.py --critics 1024 --rounds 3
    python benchmarks/update_throughput.py --profile --critics 1024  # profile of the compiled update only

Timings on a shared machine are noisy: compare the ratios (measured side by side), not absolute numbers
across runs. Each JSON records the load average.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_utils import (
    ACTION_DIM,
    ACTOR_ARCH,
    BATCH_SIZE,
    OBS_DIM,
    POLICY_DELAY,
    RESULTS_DIR,
    alternate,
    log,
    machine_info,
    machine_markdown,
    median,
    paired_ratios,
    pin_threads,
    sgemm_peak,
    write_results,
)
from tensordict import TensorDict
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchrl.data import Bounded, Composite, Unbounded

from crossq_trl import (
    CrossQLoss,
    CrossQUpdate,
    make_crossq_actor,
    make_crossq_critic,
    make_crossq_optimizers,
    make_replay_buffer,
)
from crossq_trl.training.host_memory import keep_freed_memory

BUFFER_TRANSITIONS = 20_000
DEVICE = torch.device("cpu")  # --device
LEARNING_RATE = 1e-3
ADAM_BETAS = (0.5, 0.999)
# updates/s of the peers on a 2-core CPU, from shared/REFERENCE.md (another machine, shown for orientation only)
REFERENCE_RATES = {
    1024: {"sb3_contrib": 6.0, "torchrl": 8.7, "sbx": 14.2},
    256: {"sb3_contrib": 46.7, "torchrl": 45.4, "sbx": 112.9},
}
TARGETS = {1024: 2.8, 256: 3.0}  # compiled crossq_trl / sb3-contrib


class Runner:
    """One implementation on one workload: ``update(n)`` runs ``n`` gradient updates (sampling included)."""

    name: str = ""

    def update(self, n: int) -> None:
        raise NotImplementedError

    def flops_per_update(self) -> float | None:
        """Matmul FLOPs of one update, averaged over a policy-delay cycle; None when not countable (JAX)."""
        with FlopCounterMode(display=False) as counter:
            self.update(POLICY_DELAY)
        return counter.get_total_flops() / POLICY_DELAY

    def rate(self, n: int) -> float:
        gc.collect()
        start = time.perf_counter()
        self.update(n)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - start)


# --- crossq_trl ---------------------------------------------------------------------------------------------------


def action_spec() -> Bounded:
    return Bounded(-1.0, 1.0, (ACTION_DIM,))


def random_transitions(n: int, seed: int = 0) -> TensorDict:
    generator = torch.Generator().manual_seed(seed)
    done = torch.rand(n, 1, generator=generator) < 0.001
    return TensorDict(
        {
            "observation": torch.randn(n, OBS_DIM, generator=generator),
            "action": torch.rand(n, ACTION_DIM, generator=generator) * 2 - 1,
            ("next", "observation"): torch.randn(n, OBS_DIM, generator=generator),
            ("next", "reward"): torch.randn(n, 1, generator=generator),
            ("next", "done"): done,
            ("next", "terminated"): done.clone(),
        },
        [n],
    )


def filled_replay_buffer():
    buffer = make_replay_buffer(BUFFER_TRANSITIONS, BATCH_SIZE)
    buffer.extend(random_transitions(BUFFER_TRANSITIONS))
    return buffer


class CrossQTrlRunner(Runner):
    def __init__(self, critic_arch: list[int], *, compile: bool, precision: str = "float32") -> None:
        self.name = ("crossq_trl (compiled)" if compile else "crossq_trl (eager)") + (
            "" if precision == "float32" else f" {precision}"
        )
        torch.manual_seed(0)
        specs = {"observation_spec": Composite(observation=Unbounded((OBS_DIM,))), "action_spec": action_spec()}
        actor = make_crossq_actor(**specs, net_arch=list(ACTOR_ARCH), device=DEVICE)
        critic = make_crossq_critic(**specs, net_arch=critic_arch, device=DEVICE)
        loss = CrossQLoss(actor, critic)
        loss.make_value_estimator(gamma=0.99)
        self.crossq_update = CrossQUpdate(
            loss,
            make_crossq_optimizers(loss, learning_rate=LEARNING_RATE),
            policy_delay=POLICY_DELAY,
            compile=compile,
            precision=precision,
        )
        self.buffer = filled_replay_buffer()

    def update(self, n: int) -> None:
        """n updates on batches drawn together, as ``CrossQTrainer`` draws the batches of n updates due at once."""
        for batch in self.buffer.iter_batches(n, DEVICE):
            self.crossq_update(batch)


# --- sb3-contrib and SBX ------------------------------------------------------------------------------------------


def fill_sb3_buffer(model, n: int, seed: int = 0) -> None:
    """Random HalfCheetah-shaped transitions written straight into an sb3 ReplayBuffer (1 env)."""
    rng = np.random.default_rng(seed)
    buffer = model.replay_buffer
    buffer.observations[:n] = rng.standard_normal((n, 1, OBS_DIM), dtype=np.float32)
    buffer.next_observations[:n] = rng.standard_normal((n, 1, OBS_DIM), dtype=np.float32)
    buffer.actions[:n] = rng.uniform(-1, 1, (n, 1, ACTION_DIM)).astype(np.float32)
    buffer.rewards[:n] = rng.standard_normal((n, 1), dtype=np.float32)
    buffer.dones[:n] = (rng.random((n, 1)) < 0.001).astype(np.float32)
    buffer.timeouts[:n] = 0.0
    buffer.pos, buffer.full = n % buffer.buffer_size, n >= buffer.buffer_size


def sb3_style_model(cls, critic_arch: list[int]):
    import gymnasium as gym
    from stable_baselines3.common.logger import configure

    model = cls(
        "MlpPolicy",
        gym.make("HalfCheetah-v5"),
        learning_rate=LEARNING_RATE,
        buffer_size=BUFFER_TRANSITIONS,
        learning_starts=0,
        batch_size=BATCH_SIZE,
        policy_delay=POLICY_DELAY,
        policy_kwargs={"net_arch": {"pi": list(ACTOR_ARCH), "qf": critic_arch}},
        seed=0,
        device=DEVICE.type,
    )
    model.set_logger(configure(None, [""]))
    fill_sb3_buffer(model, BUFFER_TRANSITIONS)
    return model


class Sb3ContribRunner(Runner):
    name = "sb3-contrib"

    def __init__(self, critic_arch: list[int]) -> None:
        from sb3_contrib import CrossQ

        self.model = sb3_style_model(CrossQ, critic_arch)

    def update(self, n: int) -> None:
        self.model.train(gradient_steps=n, batch_size=BATCH_SIZE)


class SbxRunner(Runner):
    """SBX's ``train(gradient_steps=n)`` samples all n batches at once and runs them in one jitted loop (compiled
    once per distinct n: warm up with the same n that is timed)."""

    name = "SBX (JAX jit)"

    def __init__(self, critic_arch: list[int]) -> None:
        from sbx import CrossQ

        self.model = sb3_style_model(CrossQ, critic_arch)

    def update(self, n: int) -> None:
        self.model.train(gradient_steps=n, batch_size=BATCH_SIZE)  # ends with .item() on the losses: synced

    def flops_per_update(self) -> float | None:
        return None


# --- TorchRL's own CrossQ -----------------------------------------------------------------------------------------


class TorchRLRunner(Runner):
    """``torchrl.objectives.CrossQLoss`` with ``torchrl.modules.BatchRenorm1d`` MLPs (``Linear -> ReLU -> BRN``
    blocks, as TorchRL's sota-implementations/crossq builds them), eager, updated as that script does: critic
    every step, actor + temperature every policy_delay-th."""

    name = "TorchRL CrossQLoss (eager)"

    def __init__(self, critic_arch: list[int]) -> None:
        from tensordict.nn import NormalParamExtractor, TensorDictModule
        from torchrl.envs.utils import ExplorationType
        from torchrl.modules import MLP, BatchRenorm1d, ProbabilisticActor, TanhNormal, ValueOperator
        from torchrl.objectives import CrossQLoss as TorchRLCrossQLoss

        torch.manual_seed(0)

        def brn_mlp(in_features: int, arch: list[int], out_features: int) -> MLP:
            return MLP(
                in_features=in_features,
                num_cells=arch,
                out_features=out_features,
                activation_class=nn.ReLU,
                norm_class=BatchRenorm1d,
                norm_kwargs={"num_features": arch[-1], "momentum": 0.01, "warmup_steps": 100_000},
            )

        spec = action_spec()
        actor_net = nn.Sequential(brn_mlp(OBS_DIM, list(ACTOR_ARCH), 2 * ACTION_DIM), NormalParamExtractor())
        actor = ProbabilisticActor(
            TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"],
            spec=spec,
            distribution_class=TanhNormal,
            distribution_kwargs={"low": spec.space.low, "high": spec.space.high, "tanh_loc": False},
            default_interaction_type=ExplorationType.RANDOM,
        )
        qvalue = ValueOperator(brn_mlp(OBS_DIM + ACTION_DIM, critic_arch, 1), in_keys=["observation", "action"])
        self.loss = TorchRLCrossQLoss(actor, qvalue, num_qvalue_nets=2, loss_function="l2", action_spec=spec)
        self.loss.make_value_estimator(gamma=0.99)
        self.loss.train()
        critic_params = list(self.loss.qvalue_network_params.flatten_keys().values())
        actor_params = list(self.loss.actor_network_params.flatten_keys().values())
        self.critic_optimizer = torch.optim.Adam(critic_params, lr=LEARNING_RATE, betas=ADAM_BETAS)
        self.actor_optimizer = torch.optim.Adam(actor_params, lr=LEARNING_RATE, betas=ADAM_BETAS)
        self.alpha_optimizer = torch.optim.Adam([self.loss.log_alpha], lr=LEARNING_RATE)
        self.buffer = filled_replay_buffer()
        self.num_updates = 0

    def update(self, n: int) -> None:
        for _ in range(n):
            self.num_updates += 1
            batch = self.buffer.sample()
            loss_qvalue, _ = self.loss.qvalue_loss(batch)
            self.critic_optimizer.zero_grad(set_to_none=True)
            loss_qvalue.backward()
            self.critic_optimizer.step()
            if self.num_updates % POLICY_DELAY == 0:
                loss_actor, metadata = self.loss.actor_loss(batch)
                loss_alpha = self.loss.alpha_loss(metadata["log_prob"])
                self.actor_optimizer.zero_grad(set_to_none=True)
                self.alpha_optimizer.zero_grad(set_to_none=True)
                (loss_actor + loss_alpha).backward()
                self.actor_optimizer.step()
                self.alpha_optimizer.step()


# --- the benchmark ------------------------------------------------------------------------------------------------


def make_runners(critic: int, peers: bool, bf16: bool = False) -> dict[str, Callable[[], Runner]]:
    arch = [critic, critic]
    factories: dict[str, Callable[[], Runner]] = {
        "crossq_trl_eager": lambda: CrossQTrlRunner(arch, compile=False),
        "crossq_trl_compiled": lambda: CrossQTrlRunner(arch, compile=True),
    }
    if bf16:
        factories["crossq_trl_compiled_bf16"] = lambda: CrossQTrlRunner(arch, compile=True, precision="bf16")
    if peers:
        factories["sb3_contrib"] = lambda: Sb3ContribRunner(arch)
        try:
            import sbx  # noqa: F401

            factories["sbx"] = lambda: SbxRunner(arch)
        except ImportError:
            log("sbx not importable: SBX skipped (pip install sbx-rl)")
        if DEVICE.type == "cpu":
            factories["torchrl"] = lambda: TorchRLRunner(arch)
    return factories


def cycles(n: float) -> int:
    """A whole number of policy-delay cycles, at least two."""
    return max(2, round(n / POLICY_DELAY)) * POLICY_DELAY


def bench_critic(critic: int, peers: bool, rounds: int, seconds: float, bf16: bool = False) -> dict[str, Any]:
    log(f"critic [{critic}, {critic}]: building and warming up")
    runners: dict[str, Runner] = {}
    setup: dict[str, dict[str, float]] = {}
    for key, factory in make_runners(critic, peers, bf16).items():
        start = time.perf_counter()
        runner = factory()
        built = time.perf_counter()
        runner.update(2 * POLICY_DELAY)  # compile / jit and first-touch allocations, critic and actor steps
        warm = time.perf_counter()
        rate = runner.rate(2 * POLICY_DELAY)
        updates = cycles(rate * seconds)
        if isinstance(runner, SbxRunner):
            runner.update(updates)  # jit for this gradient_steps value
        runners[key] = runner
        setup[key] = {
            "build_s": built - start,
            "warmup_s": warm - built,
            "updates_per_run": updates,
            "calibration_rate": rate,
        }
        log(f"  {runner.name}: build {built - start:.1f}s, warm-up {warm - built:.1f}s, ~{rate:.1f} updates/s")
    # The compiled update runs the eager update's matmuls: count them on the eager path (a dispatch mode around a
    # compiled graph would only see its extern kernels, and could make it recompile).
    flops = {
        key: runner.flops_per_update() for key, runner in runners.items() if not key.startswith("crossq_trl_compiled")
    }
    for key in runners:
        if key.startswith("crossq_trl_compiled"):
            flops[key] = flops["crossq_trl_eager"]
    log(f"critic [{critic}, {critic}]: timing {rounds} rounds")
    timed = {key: (lambda r=runner, n=setup[key]["updates_per_run"]: r.rate(n)) for key, runner in runners.items()}
    rates = alternate(timed, rounds, log)
    return {
        "critic": [critic, critic],
        "names": {key: runner.name for key, runner in runners.items()},
        "setup": setup,
        "flops_per_update": flops,
        "rates": rates,
    }


def summarize(result: dict[str, Any], peak: float) -> dict[str, Any]:
    rates, flops = result["rates"], result["flops_per_update"]
    ours = "crossq_trl_compiled"
    rows = {}
    for key, values in rates.items():
        rate = median(values)
        row = {"updates_per_s": rate, "min": min(values), "max": max(values)}
        if flops.get(key):
            row["gflop_per_update"] = flops[key] / 1e9
            row["gflop_per_s"] = flops[key] * rate / 1e9
            row["fraction_of_sgemm_peak"] = row["gflop_per_s"] / peak
        if key != ours:
            ratios = paired_ratios(rates, ours, key)
            row["compiled_over_this"] = median(ratios)
            row["compiled_over_this_rounds"] = ratios
        rows[key] = row
    return rows


def markdown_report(info: dict[str, Any], peak: dict[str, float], results: list[dict[str, Any]], cmd: str) -> str:
    lines = [
        "# CrossQ update throughput",
        "",
        f"Command: `{cmd}`",
        "",
        machine_markdown(info),
        f"- float32 sgemm peak in this run ({info['torch_threads']} torch thread(s)): "
        + ", ".join(f"{name} {value:.1f} GFLOP/s" for name, value in peak.items() if name != "peak"),
        "",
        "Workload: HalfCheetah-v5 shapes (obs 17, act 6), batch 256, actor [256, 256], policy_delay 3; the batches "
        "of a run's n updates drawn from the replay buffer in one sample (crossq_trl, SBX) or one per update "
        "(sb3-contrib, TorchRL); median over alternating rounds. `compiled / this`: median of the round-by-round "
        "ratios (runs measured back to back). FLOPs: matmul FLOPs of one update, forward + backward, counted with "
        "`FlopCounterMode` over one policy-delay cycle / 3. With `--threads N` the whole process is pinned to "
        "N CPUs, so that SBX (XLA's CPU thread pool takes every core it can see, whatever its flags) gets the same "
        "CPU budget as the PyTorch implementations.",
        "",
    ]
    for result in results:
        critic = result["critic"][0]
        rows = result["summary"]
        lines += [
            f"## critic [{critic}, {critic}]",
            "",
            "| implementation | updates/s | min-max | GFLOP/update | GFLOP/s | % of sgemm peak | compiled / this "
            "| reference updates/s (REFERENCE.md) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, row in rows.items():
            gflop = f"{row['gflop_per_update']:.2f}" if "gflop_per_update" in row else "-"
            gflops = f"{row['gflop_per_s']:.1f}" if "gflop_per_s" in row else "-"
            share = f"{100 * row['fraction_of_sgemm_peak']:.0f}%" if "fraction_of_sgemm_peak" in row else "-"
            ratio = f"{row['compiled_over_this']:.2f}x" if "compiled_over_this" in row else "-"
            reference = REFERENCE_RATES[critic].get(key, "-") if critic in REFERENCE_RATES else "-"
            lines.append(
                f"| {result['names'][key]} | {row['updates_per_s']:.2f} | {row['min']:.2f}-{row['max']:.2f} | "
                f"{gflop} | {gflops} | {share} | {ratio} | {reference} |"
            )
        if "sb3_contrib" in rows and critic in TARGETS:
            ratio = rows["sb3_contrib"]["compiled_over_this"]
            verdict = "met" if ratio >= TARGETS[critic] else "not met"
            lines += ["", f"Target compiled / sb3-contrib >= {TARGETS[critic]}x: {ratio:.2f}x ({verdict})."]
        setup = ", ".join(f"{result['names'][key]} {value['warmup_s']:.1f}s" for key, value in result["setup"].items())
        lines += ["", f"Warm-up (first {2 * POLICY_DELAY} updates, compile/jit included): {setup}.", ""]
    return "\n".join(lines)


_MATMULS = ("bmm", "baddbmm", "mm", "addmm")
PROFILE_CATEGORIES = {  # matmuls are aten ops, or extern calls of the C++ wrapper (Inductor on CPU)
    "matmul (MKL bmm/baddbmm/mm/addmm)": tuple(
        f"{prefix}{op}" for prefix in ("aten::", "aoti_torch_cpu_") for op in _MATMULS
    ),
    "Adam outside the graph (non-Adam optimizers, Python)": (
        "aten::_fused_adam_",
        "Optimizer.step#",
        "Optimizer.zero_grad#",
    ),
    "Dynamo guard evaluation": ("TorchDynamo Cache Lookup",),
    "compiled graph calls (wrapper)": ("## Call CompiledFxGraph",),
}


def profile_compiled(critic: int, out_dir: Path, updates: int = 2 * POLICY_DELAY) -> None:
    """Profile ``updates`` compiled updates (CPU; Inductor's generated kernels named ``graph_*``), write the op
    table and a per-update breakdown by category (self CPU time)."""
    import torch._inductor.config as inductor_config
    from torch.profiler import ProfilerActivity, profile

    inductor_config.cpp.enable_kernel_profile = True  # generated kernels show up by name
    runner = CrossQTrlRunner([critic, critic], compile=True)
    runner.update(2 * updates)
    batches = [runner.buffer.sample() for _ in range(updates)]
    start = time.perf_counter()
    for batch in batches:
        runner.crossq_update(batch)
    unprofiled_ms = (time.perf_counter() - start) / updates * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            runner.crossq_update(batch)
    events = prof.key_averages()
    totals: dict[str, float] = dict.fromkeys(
        [*PROFILE_CATEGORIES, "Inductor kernels (fused BRN, ReLU, losses, Adam)"], 0.0
    )
    totals["BRN saved_for_backward custom op (incl. its copy)"] = 0.0
    totals["other (wrappers, autograd engine, small aten ops)"] = 0.0
    barrier_children = 0.0
    for event in events:
        self_ms = event.self_cpu_time_total / 1e3 / updates
        if event.key == "crossq_trl::saved_for_backward":
            totals["BRN saved_for_backward custom op (incl. its copy)"] += event.cpu_time_total / 1e3 / updates
            barrier_children += (event.cpu_time_total - event.self_cpu_time_total) / 1e3 / updates
            continue
        category = next(
            (name for name, keys in PROFILE_CATEGORIES.items() if event.key.startswith(keys)),
            "Inductor kernels (fused BRN, ReLU, losses, Adam)" if event.key.startswith("graph_") else None,
        )
        totals[category or "other (wrappers, autograd engine, small aten ops)"] += self_ms
    totals["other (wrappers, autograd engine, small aten ops)"] -= barrier_children
    profiled_ms = sum(totals.values())
    lines = [
        f"Compiled CrossQUpdate, critic [{critic}, {critic}], {torch.get_num_threads()} thread(s): {updates} updates "
        f"({updates // POLICY_DELAY} with the actor step), {unprofiled_ms:.1f} ms/update without the profiler, "
        f"{profiled_ms:.1f} ms/update profiled (self CPU time).",
        "",
        "| category | ms/update | share |",
        "|---|---|---|",
        *(f"| {name} | {ms:.2f} | {100 * ms / profiled_ms:.0f}% |" for name, ms in totals.items()),
        "",
        events.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=110),
    ]
    text = "\n".join(lines)
    print(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"update_profile_{critic}_{torch.get_num_threads()}thread.md"
    path.write_text(text + "\n")
    log(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--critics", type=int, nargs="+", default=[1024, 256], help="critic widths (2 layers)")
    parser.add_argument("--peers", action="store_true", help="also sb3-contrib, SBX (if installed) and TorchRL")
    parser.add_argument("--bf16", action="store_true", help="also crossq_trl compiled with precision='bf16'")
    parser.add_argument("--device", default="cpu", help="device of the PyTorch implementations (cuda: CUDA graphs)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    parser.add_argument("--seconds", type=float, default=3.0, help="approximate duration of one timed run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument(
        "--profile", action="store_true", help="only profile the compiled update at the first critic width, then exit"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="output directory")
    parser.add_argument("--name", default="update_throughput", help="output file stem")
    args = parser.parse_args(argv)
    pin_threads(args.threads)
    keep_freed_memory()  # process-wide: every implementation measured here runs with it

    global DEVICE
    DEVICE = torch.device(args.device)
    if args.profile:
        profile_compiled(args.critics[0], args.out)
        return 0
    info = machine_info()
    log(f"{info['cpu_model']}, {info['logical_cpus']} CPUs, torch {torch.__version__}, {info['torch_threads']} threads")
    peak_before = sgemm_peak(DEVICE)
    results = []
    for critic in args.critics:
        results.append(bench_critic(critic, args.peers, args.rounds, args.seconds, args.bf16))
    peak_after = sgemm_peak(DEVICE)
    peak = {name: max(peak_before[name], peak_after[name]) for name in peak_before}
    log("sgemm peak: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peak.items()))
    for result in results:
        result["summary"] = summarize(result, peak["peak"])
    info["loadavg_end"] = os.getloadavg()
    cmd = "python benchmarks/update_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = markdown_report(info, peak, results, cmd.strip())
    print(report)
    payload = {"command": cmd, "machine": info, "sgemm": {"before": peak_before, "after": peak_after, "best": peak}}
    payload["results"] = results
    write_results(args.name, report, payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
