"""Learning check of the VecEnv path: one sb3-contrib CrossQ script, run with ``from sb3_contrib import CrossQ``
and with ``from crossq_trl import CrossQ``, on the same sb3 VecEnvs (``DummyVecEnv``, with and without
``VecNormalize``) and seeds.

Each run trains on ``make_vec_env(env_id, n_envs, seed=seed)`` (wrapped in ``VecNormalize`` for the
``vecnormalize`` variant), then plays deterministic episodes on a fresh VecEnv seeded ``seed + 10_000`` (with the
training run's observation statistics, frozen, for ``vecnormalize``) and reports their mean raw return. One
JSON per run in ``benchmarks/results/vec_env/``; a run whose JSON exists is skipped::

    nice -n 5 python benchmarks/vec_env_learning.py --seeds 0 1 --total-steps 20000
    python benchmarks/vec_env_learning.py --summary
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "vec_env"
VARIANTS = ("dummy", "vecnormalize")
IMPLS = ("crossq_trl", "sb3_contrib")


def make_training_env(variant: str, env_id: str, n_envs: int, seed: int):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    vec_env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    return VecNormalize(vec_env) if variant == "vecnormalize" else vec_env


def evaluate(model, train_env, env_id: str, seed: int, episodes: int) -> list[float]:
    """Raw returns of deterministic episodes on a new VecEnv, normalised as the training env (statistics frozen)."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000)
    if isinstance(train_env, VecNormalize):
        env = VecNormalize(env, training=False, norm_reward=False)
        env.obs_rms = train_env.obs_rms
    returns, total, obs = [], 0.0, env.reset()
    while len(returns) < episodes:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, done, _ = env.step(action)
        total += float(reward[0])
        if done[0]:
            returns.append(total)
            total = 0.0
    return returns


def run(impl: str, variant: str, args: argparse.Namespace, seed: int) -> dict:
    if impl == "crossq_trl":
        from crossq_trl import CrossQ
    else:
        from sb3_contrib import CrossQ
    torch.set_num_threads(args.threads)
    vec_env = make_training_env(variant, args.env, args.n_envs, seed)
    model = CrossQ(
        "MlpPolicy",
        vec_env,
        learning_starts=args.learning_starts,
        policy_delay=args.policy_delay,
        policy_kwargs={"net_arch": args.net_arch},
        seed=seed,
    )
    start = time.perf_counter()
    model.learn(total_timesteps=args.total_steps)
    train_time = time.perf_counter() - start
    returns = evaluate(model, vec_env, args.env, seed, args.eval_episodes)
    return {
        "impl": impl,
        "variant": variant,
        "env": args.env,
        "seed": seed,
        "n_envs": args.n_envs,
        "total_steps": args.total_steps,
        "net_arch": args.net_arch,
        "policy_delay": args.policy_delay,
        "learning_starts": args.learning_starts,
        "threads": args.threads,
        "train_time_s": train_time,
        "env_steps_per_s": args.total_steps / train_time,
        "eval_returns": returns,
        "mean_return": float(np.mean(returns)),
    }


def summary() -> str:
    rows = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))]
    lines = [
        "| variant | impl | seeds | mean return per seed | mean | env steps/s |",
        "|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        for impl in IMPLS:
            cell = [r for r in rows if r["variant"] == variant and r["impl"] == impl]
            if not cell:
                continue
            per_seed = ", ".join(f"{r['mean_return']:.0f}" for r in cell)
            mean = np.mean([r["mean_return"] for r in cell])
            speed = np.mean([r["env_steps_per_s"] for r in cell])
            seeds = " ".join(str(r["seed"]) for r in cell)
            lines.append(f"| {variant} | {impl} | {seeds} | {per_seed} | {mean:.0f} | {speed:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--n-envs", type=int, default=2)
    parser.add_argument("--total-steps", type=int, default=20_000)
    parser.add_argument("--learning-starts", type=int, default=100)
    parser.add_argument("--policy-delay", type=int, default=2)
    parser.add_argument("--net-arch", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--summary", action="store_true", help="print the table of the recorded runs and exit")
    args = parser.parse_args()
    if args.summary:
        print(summary())
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for variant in args.variants:
            for impl in IMPLS:
                path = RESULTS / f"{impl}__{variant}__{args.env}__seed{seed}.json"
                if path.exists():
                    continue
                result = run(impl, variant, args, seed)
                path.write_text(json.dumps(result, indent=1))
                print(f"{path.name}: mean return {result['mean_return']:.1f} ({result['train_time_s']:.0f} s)")
    print(summary())


if __name__ == "__main__":
    main()
