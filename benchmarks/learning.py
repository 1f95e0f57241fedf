"""Learning benchmark: crossq_trl's CrossQ side by side with sb3-contrib's CrossQ.

Both implementations get the same hyperparameters, seeds, evaluation schedule and
per-process thread budget. Every cell (implementation, env, seed) writes one JSON file
with its evaluation curve, final return, wall-clock, env steps/s and final temperature;
a cell whose JSON exists is never rerun, so a killed suite resumes where it stopped.

CPU suite (the default protocol, about 2-3 hours on 2 cores)::

    nohup python benchmarks/learning.py --workers 2 > benchmarks/results/learning/suite.log 2>&1 &

Full-scale protocol of the CrossQ paper / RL Zoo (six MuJoCo tasks, 1M steps, critic
[1024, 1024], evaluation every 25k steps on 5 envs x 20 episodes; meant for a GPU)::

    python benchmarks/learning.py --protocol full --workers 1 --threads 4

Pipeline check in a few minutes (writes to benchmarks/results/learning_smoke/)::

    python benchmarks/learning.py --smoke

The variants (CrossQ + WN and XQC, with their presets: ``CrossQ(variant=...)``) against plain CrossQ at
update-to-data ratios 1 and 2 on HalfCheetah-v5 and Hopper-v5, 3 seeds, 10k steps, all with the CPU suite's
networks (about two hours on 2 cores; results in benchmarks/results/learning_variants/)::

    python benchmarks/learning.py --protocol variants --workers 2

and at full scale with the presets' networks (1M steps; add ``--utd 1 4`` for a higher ratio)::

    python benchmarks/learning.py --protocol full --envs HalfCheetah-v5 Hopper-v5 \
        --impls crossq_trl crossq_trl_crossq_wn crossq_trl_xqc --utd 1 2 --workers 1 --threads 4

Aggregate with ``python benchmarks/aggregate_learning.py`` (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from crossq_trl.distributed import run_jobs

VARIANT_IMPLS = {"crossq_trl_crossq_wn": "crossq_wn", "crossq_trl_xqc": "xqc"}  # impl -> CrossQ(variant=...)
IMPLS = ("crossq_trl", "sb3_contrib", *VARIANT_IMPLS)
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class EnvSetting:
    total_steps: int
    policy_delay: int
    learning_starts: int


@dataclass(frozen=True)
class Protocol:
    """One benchmark protocol: per-env settings plus what both implementations share."""

    envs: dict[str, EnvSetting]
    seeds: tuple[int, ...]
    net_arch: dict[str, list[int]] | None  # None: each library's default (pi [256, 256], qf [1024, 1024])
    eval_freq: int
    n_eval_envs: int
    n_eval_episodes: int  # in total, spread over the n_eval_envs envs (as RL Zoo's EvalCallback)
    out: Path
    impls: tuple[str, ...] = ("crossq_trl", "sb3_contrib")
    utds: tuple[int, ...] = (1,)


_MUJOCO_FULL = EnvSetting(total_steps=1_000_000, policy_delay=3, learning_starts=5000)
# Small enough for a 2-core CPU; RL Zoo settings for Pendulum-v1.
_CPU_SUITE = Protocol(
    envs={
        "Pendulum-v1": EnvSetting(total_steps=20_000, policy_delay=2, learning_starts=100),
        "InvertedPendulum-v5": EnvSetting(total_steps=10_000, policy_delay=3, learning_starts=1000),
        "HalfCheetah-v5": EnvSetting(total_steps=30_000, policy_delay=3, learning_starts=5000),
    },
    seeds=(0, 1, 2),
    net_arch={"pi": [256, 256], "qf": [256, 256]},
    eval_freq=2000,
    n_eval_envs=1,
    n_eval_episodes=10,
    out=RESULTS_DIR / "learning",
)
_MUJOCO_SHORT = EnvSetting(total_steps=10_000, policy_delay=3, learning_starts=1000)
PROTOCOLS: dict[str, Protocol] = {
    "cpu": _CPU_SUITE,
    # The sb3-contrib benchmark (RL Zoo crossq.yml MuJoCo defaults, default [1024, 1024] critic),
    # `python train.py --algo crossq --env ENV --n-eval-envs 5 --eval-episodes 20 --eval-freq 25000`.
    "full": Protocol(
        envs={
            f"{name}-v5": _MUJOCO_FULL
            for name in ("Humanoid", "HumanoidStandup", "Walker2d", "Ant", "HalfCheetah", "Hopper")
        },
        seeds=(0, 1, 2, 3, 4),
        net_arch=None,
        eval_freq=25_000,
        n_eval_envs=5,
        n_eval_episodes=20,
        out=RESULTS_DIR / "learning_full",
    ),
    # The variants against plain CrossQ at a short budget that fits about two hours of 2 CPU cores: the CPU
    # suite's networks, seeds and evaluation for every implementation (with the presets' critics of 2 x 512 and
    # 4 x 512 units and UTD 2, an env step costs 5x and 14x one of plain CrossQ [256] at UTD 1 here), the rest
    # from the variant's preset; the cell sets the update-to-data ratio.
    "variants": replace(
        _CPU_SUITE,
        envs={"HalfCheetah-v5": _MUJOCO_SHORT, "Hopper-v5": _MUJOCO_SHORT},
        out=RESULTS_DIR / "learning_variants",
        impls=("crossq_trl", *VARIANT_IMPLS),
        utds=(1, 2),
    ),
}


def smoke_protocol(protocol: Protocol) -> Protocol:
    """Tiny step counts that still cross learning_starts and run a few evaluations."""
    envs = {
        env_id: EnvSetting(total_steps=600, policy_delay=setting.policy_delay, learning_starts=200)
        for env_id, setting in protocol.envs.items()
    }
    return replace(
        protocol,
        envs=envs,
        seeds=(0,),
        eval_freq=200,
        n_eval_episodes=max(2, protocol.n_eval_envs),
        out=protocol.out.with_name(protocol.out.name + "_smoke"),
    )


@dataclass(frozen=True)
class Cell:
    impl: str
    env_id: str
    seed: int
    setting: EnvSetting
    net_arch: dict[str, list[int]] | None
    eval_freq: int
    n_eval_envs: int
    n_eval_episodes: int
    threads: int
    protocol: str
    smoke: bool
    utd: int = 1  # gradient steps per env step

    @property
    def name(self) -> str:
        utd = "" if self.utd == 1 else f"__utd{self.utd}"
        return f"{self.impl}__{self.env_id}__seed{self.seed}{utd}"


def episode_split(n_episodes: int, n_envs: int) -> list[int]:
    """Episodes per eval env, as sb3's ``evaluate_policy`` spreads them."""
    return [(n_episodes + i) // n_envs for i in range(n_envs)]


class Clock:
    """Training time with the evaluation time taken out."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.eval_time = 0.0

    def train_time(self) -> float:
        return time.perf_counter() - self.start - self.eval_time

    def timed_eval(self, evaluate: Callable[[], list[float]]) -> list[float]:
        t0 = time.perf_counter()
        returns = evaluate()
        self.eval_time += time.perf_counter() - t0
        return returns


class Recorder:
    """Evaluation schedule and timing marks shared by both implementations.

    ``on_step(steps)`` is called after env step ``steps``; it evaluates at every
    multiple of ``eval_freq`` strictly below the total (the final evaluation runs after
    training) and marks the training time at step ``learning_starts - 1``, before either
    implementation ran its first update (crossq_trl's first update, which compiles, runs
    with the batch that reaches ``learning_starts``; sb3's after step ``learning_starts + 1``).
    """

    def __init__(self, cell: Cell, evaluate: Callable[[], list[float]], alpha: Callable[[], float]) -> None:
        self.cell = cell
        self.evaluate = evaluate
        self.alpha = alpha
        self.clock = Clock()
        self.next_eval = cell.eval_freq
        self.mark_step = max(cell.setting.learning_starts - 1, 0)
        self.learning_starts_time: float | None = 0.0 if self.mark_step == 0 else None
        self.curve: dict[str, list[float]] = {
            "steps": [],
            "mean_return": [],
            "std_return": [],
            "train_time_s": [],
            "alpha": [],
        }

    def on_step(self, steps: int) -> None:
        if self.learning_starts_time is None and steps >= self.mark_step:
            self.learning_starts_time = self.clock.train_time()
        while self.next_eval < self.cell.setting.total_steps and steps >= self.next_eval:
            self.record(self.next_eval)
            self.next_eval += self.cell.eval_freq

    def record(self, steps: int) -> list[float]:
        train_time = self.clock.train_time()
        returns = self.clock.timed_eval(self.evaluate)
        self.curve["steps"].append(steps)
        self.curve["mean_return"].append(float(np.mean(returns)))
        self.curve["std_return"].append(float(np.std(returns)))
        self.curve["train_time_s"].append(train_time)
        self.curve["alpha"].append(self.alpha())
        return returns

    def result(self, final_returns: list[float], n_updates: int) -> dict[str, Any]:
        setting = self.cell.setting
        train_time = self.curve["train_time_s"][-1]
        after = None
        if self.learning_starts_time is not None and train_time > self.learning_starts_time:
            after = (setting.total_steps - self.mark_step) / (train_time - self.learning_starts_time)
        return {
            "curve": self.curve,
            "final_return": float(np.mean(final_returns)),
            "final_return_std": float(np.std(final_returns)),
            "final_returns": [float(r) for r in final_returns],
            "train_time_s": train_time,
            "eval_time_s": self.clock.eval_time,
            "wall_clock_s": time.perf_counter() - self.clock.start,
            "learning_starts_time_s": self.learning_starts_time,
            "env_steps_per_s": setting.total_steps / train_time,
            "env_steps_per_s_after_learning_starts": after,
            "alpha_final": self.curve["alpha"][-1],
            "n_updates": n_updates,
        }


# --- the two implementations -----------------------------------------------------------


def shared_hyperparameters(cell: Cell) -> dict[str, Any]:
    """The constructor arguments both libraries get, in the same sb3 spelling: the settings of the cell, the
    rest at each library's (identical) defaults."""
    return {
        "learning_starts": cell.setting.learning_starts,
        "policy_delay": cell.setting.policy_delay,
        "gradient_steps": cell.utd,
        "seed": cell.seed,
        "policy_kwargs": {} if cell.net_arch is None else {"net_arch": cell.net_arch},  # None: the presets' networks
        "device": "cpu" if cell.protocol in ("cpu", "variants") else "auto",
    }


def run_crossq_trl(cell: Cell) -> dict[str, Any]:
    from crossq_trl import CrossQ
    from crossq_trl.training.envs import make_env
    from crossq_trl.training.evaluation import evaluate_policy

    variant = VARIANT_IMPLS.get(cell.impl, "crossq")
    model = CrossQ("MlpPolicy", cell.env_id, compile=True, variant=variant, **shared_hyperparameters(cell))
    eval_envs = [
        make_env(cell.env_id, seed=cell.seed + 10_000 + i, device=model.device) for i in range(cell.n_eval_envs)
    ]
    split = episode_split(cell.n_eval_episodes, cell.n_eval_envs)

    def evaluate() -> list[float]:
        returns: list[float] = []
        for env, n in zip(eval_envs, split, strict=True):
            if n > 0:
                returns += evaluate_policy(env, model.actor, n)[0].tolist()
        return returns

    recorder = Recorder(cell, evaluate, alpha=lambda: float(model.loss_module._alpha))
    model.learn(cell.setting.total_steps, callback=lambda m: recorder.on_step(m.trainer.collected_frames))
    final = recorder.record(model.trainer.collected_frames)
    return recorder.result(final, n_updates=model.update.num_updates)


def run_sb3_contrib(cell: Cell) -> dict[str, Any]:
    import gymnasium as gym
    import torch
    from sb3_contrib import CrossQ
    from stable_baselines3.common.callbacks import BaseCallback

    model = CrossQ("MlpPolicy", cell.env_id, **shared_hyperparameters(cell))
    eval_envs = [gym.make(cell.env_id) for _ in range(cell.n_eval_envs)]
    for i, env in enumerate(eval_envs):
        env.reset(seed=cell.seed + 10_000 + i)
        env.action_space.seed(cell.seed + 10_000 + i)
    split = episode_split(cell.n_eval_episodes, cell.n_eval_envs)

    def evaluate() -> list[float]:
        returns: list[float] = []
        for env, n in zip(eval_envs, split, strict=True):
            for _ in range(n):
                obs, _ = env.reset()
                done, total = False, 0.0
                while not done:
                    action, _ = model.predict(obs, deterministic=True)
                    obs, reward, terminated, truncated, _ = env.step(action)
                    total += float(reward)
                    done = terminated or truncated
                returns.append(total)
        return returns

    def alpha() -> float:
        if model.log_ent_coef is None:
            return float(model.ent_coef_tensor)
        return float(torch.exp(model.log_ent_coef.detach()).item())

    recorder = Recorder(cell, evaluate, alpha)

    class PeriodicEval(BaseCallback):
        def _on_step(self) -> bool:
            recorder.on_step(self.num_timesteps)
            return True

    model.learn(cell.setting.total_steps, callback=PeriodicEval())
    final = recorder.record(model.num_timesteps)
    return recorder.result(final, n_updates=model._n_updates)


RUNNERS: dict[str, Callable[[Cell], dict[str, Any]]] = {
    "crossq_trl": run_crossq_trl,
    "sb3_contrib": run_sb3_contrib,
    **dict.fromkeys(VARIANT_IMPLS, run_crossq_trl),
}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("torch", "torchrl", "tensordict", "gymnasium", "mujoco", "crossq-trl", "sb3-contrib"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def _code_version() -> dict[str, Any]:
    """The git revision of the crossq_trl code a cell ran (the package may change during a suite)."""
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    diff = git("diff", "HEAD", "--", "crossq_trl")
    return {
        "git_head": git("rev-parse", "HEAD").strip(),
        "crossq_trl_dirty": bool(diff),
        "crossq_trl_diff_sha1": hashlib.sha1(diff.encode()).hexdigest() if diff else None,
    }


def run_cell(cell: Cell) -> dict[str, Any]:
    """Run one cell in this (fresh) worker process and return its record (the suite writes it: with Ray the cell
    may run on another machine)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(cell.threads)
    import torch

    torch.set_num_threads(cell.threads)
    started = time.time()
    load_start = os.getloadavg()
    code = _code_version()
    result = RUNNERS[cell.impl](cell)
    record = {
        "impl": cell.impl,
        "env_id": cell.env_id,
        "seed": cell.seed,
        "protocol": cell.protocol,
        "smoke": cell.smoke,
        "utd": cell.utd,
        "config": {
            **asdict(cell.setting),
            "net_arch": cell.net_arch,
            "eval_freq": cell.eval_freq,
            "n_eval_envs": cell.n_eval_envs,
            "n_eval_episodes": cell.n_eval_episodes,
            "threads": cell.threads,
            "compile": cell.impl != "sb3_contrib",
        },
        **result,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "versions": _versions(),
        "code": code,
    }
    return record


def write_record(record: dict[str, Any], path: Path) -> None:
    """The cell's JSON, written atomically (a killed suite never leaves half a file that counts as done)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


# --- the suite ---------------------------------------------------------------------------


def make_cells(protocol: Protocol, name: str, envs, seeds, impls, threads: int, smoke: bool, utds=(1,)) -> list[Cell]:
    """Cells ordered env by env, seed by seed, the implementations (and update-to-data ratios) alternating."""
    return [
        Cell(
            impl=impl,
            env_id=env_id,
            seed=seed,
            setting=protocol.envs[env_id],
            net_arch=protocol.net_arch,
            eval_freq=protocol.eval_freq,
            n_eval_envs=protocol.n_eval_envs,
            n_eval_episodes=protocol.n_eval_episodes,
            threads=threads,
            protocol=name,
            smoke=smoke,
            utd=utd,
        )
        for env_id in envs
        for seed in seeds
        for utd in utds
        for impl in impls
    ]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="cpu")
    parser.add_argument("--envs", nargs="+", help="env ids (default: all of the protocol)")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the protocol's)")
    parser.add_argument("--impls", nargs="+", choices=IMPLS, help="implementations (default: the protocol's)")
    parser.add_argument("--utd", nargs="+", type=int, help="update-to-data ratios (default: the protocol's)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, one cell each at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (both implementations)")
    parser.add_argument("--out", type=Path, help="results folder (one JSON per cell)")
    parser.add_argument("--smoke", action="store_true", help="tiny step counts, to validate the pipeline")
    parser.add_argument(
        "--ray-address",
        help="run the cells as Ray tasks (one per --threads CPUs free on the cluster) on this cluster: an address, "
        "'auto' (the one `ray start` runs on this machine) or 'local' (a new local Ray); default: --workers processes",
    )
    args = parser.parse_args(argv)

    protocol = PROTOCOLS[args.protocol]
    if args.smoke:
        protocol = smoke_protocol(protocol)
    envs = args.envs or list(protocol.envs)
    unknown = [env_id for env_id in envs if env_id not in protocol.envs]
    if unknown:
        parser.error(f"envs {unknown} are not in protocol {args.protocol!r}: {list(protocol.envs)}")
    seeds = args.seeds if args.seeds is not None else list(protocol.seeds)
    out = args.out or protocol.out
    out.mkdir(parents=True, exist_ok=True)

    impls, utds = args.impls or list(protocol.impls), args.utd or list(protocol.utds)
    cells = make_cells(protocol, args.protocol, envs, seeds, impls, args.threads, args.smoke, utds)
    todo = [cell for cell in cells if not (out / f"{cell.name}.json").exists()]
    label = f"{args.protocol} (smoke)" if args.smoke else args.protocol
    log(f"protocol {label}: {len(cells)} cells, {len(todo)} to run, out={out}")
    if not todo:
        return 0
    failed = 0
    start = time.perf_counter()
    for cell in todo:
        log(f"queued {cell.name}")
    # One fresh process per cell (a local spawned process, or a Ray task): no in-memory compile state, allocator or
    # RNG state is shared between cells (TorchInductor's on-disk cache is, as it would be for any user).
    backend = "process" if args.ray_address is None else "ray"
    address = None if args.ray_address in (None, "local") else args.ray_address
    finished = run_jobs(
        run_cell, todo, backend=backend, workers=args.workers, ray_address=address, cpus_per_job=args.threads
    )
    for done, (cell, record, error) in enumerate(finished, 1):
        if error is not None:
            failed += 1
            text = "".join(traceback.format_exception(error))
            (out / f"{cell.name}.error.txt").write_text(text)
            log(f"FAILED {cell.name} ({done}/{len(todo)}):\n{text}")
            continue
        write_record(record, out / f"{cell.name}.json")
        (out / f"{cell.name}.error.txt").unlink(missing_ok=True)
        final, train_time = record["final_return"], record["train_time_s"]
        log(f"done {cell.name} ({done}/{len(todo)}): final return {final:.1f}, train time {train_time:.0f}s")
    elapsed = time.perf_counter() - start
    log(f"suite finished in {elapsed / 60:.1f} min, {failed} failed cell(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
