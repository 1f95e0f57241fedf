"""``crossq-trl``: train and evaluate CrossQ from the command line."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from crossq_trl.agent import CrossQ
from crossq_trl.training.config import CrossQConfig
from crossq_trl.training.envs import make_env
from crossq_trl.training.evaluation import evaluate_policy
from crossq_trl.training.faults import CheckpointSaveError, EnvStepError, NonFiniteError, TrainingInterrupted


def _value(text: str):
    """Parse a flag value: Python literals (``[256, 256]``, ``(2, 'episode')``, ``0.1``), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``CrossQConfig`` field. A flag not given is absent from the parsed namespace (so a variant's
    preset can tell a default left alone from one given explicitly); :func:`config_kwargs` collects the given."""
    group = parser.add_argument_group(
        "hyperparameters (CrossQConfig; defaults of sb3-contrib's CrossQ, or of the --variant preset)"
    )
    for field in dataclasses.fields(CrossQConfig):
        flag = "--" + field.name.replace("_", "-")
        help_text = f"CrossQConfig.{field.name} (default: {field.default})"
        if field.type in ("bool", bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, type=_value, default=argparse.SUPPRESS, metavar="VALUE", help=help_text)


def config_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``CrossQConfig`` fields given on the command line."""
    return {name: getattr(args, name) for name in CrossQConfig.field_names() if hasattr(args, name)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossq-trl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    formatter = argparse.ArgumentDefaultsHelpFormatter
    threads_help = (
        "torch CPU threads (default: torch's, one per core); use 1 when other jobs share the cores: "
        "compiled CPU kernels wait for every thread, so a busy core stalls all of them"
    )

    train = commands.add_parser("train", help="train CrossQ on a gymnasium env", formatter_class=formatter)
    train.add_argument("env", nargs="?", default="Pendulum-v1", help="gymnasium env id")
    train.add_argument("--total-timesteps", type=int, default=20_000, help="env steps to train for")
    train.add_argument("--log-dir", type=Path, default=Path("runs/crossq"), help="logs, checkpoint and model")
    train.add_argument(
        "--logger", default="csv", choices=["csv", "tensorboard", "wandb", "none"], help="metrics logger"
    )
    train.add_argument("--log-interval", type=int, default=4, help="episodes between progress reports")
    train.add_argument("--checkpoint-interval", type=int, default=10_000, help="env steps between checkpoints")
    train.add_argument("--resume", type=Path, default=None, help="continue the run of this training checkpoint")
    train.add_argument(
        "--on-checkpoint-error",
        choices=["stop", "continue"],
        default="stop",
        help="if a checkpoint cannot be written (disk full, permissions): stop, or warn and retry at the next interval",
    )
    train.add_argument("--final-eval-episodes", type=int, default=10, help="deterministic episodes after training")
    train.add_argument("--progress-bar", action="store_true")
    train.add_argument("--threads", type=int, default=None, help=threads_help)
    _add_config_flags(train)

    evaluate = commands.add_parser("eval", help="evaluate a saved model or checkpoint", formatter_class=formatter)
    evaluate.add_argument("checkpoint", type=Path)
    evaluate.add_argument("--env", default=None, help="env id (default: the one it was trained on)")
    evaluate.add_argument("--episodes", type=int, default=10)
    evaluate.add_argument("--stochastic", action="store_true", help="sample actions instead of the mean")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--threads", type=int, default=None, help=threads_help)
    return parser


def _final_evaluation(model: CrossQ, env_id: str, episodes: int, seed: int | None) -> tuple[float, float]:
    env = make_env(env_id, seed=None if seed is None else seed + 20_000, device=model.device)
    returns, _ = evaluate_policy(env, model.acting_policy, episodes)
    return returns.mean().item(), returns.std(correction=0).item()


def train(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = args.resume or args.log_dir / "checkpoint.pt"
    learn_kwargs = {
        "log_interval": args.log_interval,
        "checkpoint_interval": args.checkpoint_interval,
        "on_checkpoint_error": args.on_checkpoint_error,
    }
    if args.resume is not None:
        print(f"Resuming {args.resume}", flush=True)
        model = CrossQ.resume(args.resume, **learn_kwargs, progress_bar=args.progress_bar)
        env_id = model.env_source
    else:
        config = config_kwargs(args)
        logger = None if args.logger == "none" else args.logger
        model = CrossQ("MlpPolicy", args.env, verbose=1, logger=logger, log_dir=str(args.log_dir), **config)
        env_id = args.env
        print(f"Training CrossQ on {env_id} for {args.total_timesteps} steps (device {model.device})", flush=True)
        model.learn(args.total_timesteps, checkpoint_path=checkpoint, progress_bar=args.progress_bar, **learn_kwargs)
    model_path = model.save(args.log_dir / "model.pt")
    mean, std = _final_evaluation(model, env_id, args.final_eval_episodes, model.config.seed)
    print(
        f"Done: {model.num_timesteps} steps in {time.perf_counter() - start:.0f} s | final evaluation "
        f"{mean:.1f} +/- {std:.1f} over {args.final_eval_episodes} episodes | model saved to {model_path}",
        flush=True,
    )


def evaluate(args: argparse.Namespace) -> None:
    model = CrossQ.load(args.checkpoint, device=args.device)
    env_id = args.env or model.env_source
    if env_id is None:
        raise SystemExit("This model's env was not saved by id: pass --env ENV_ID.")
    env = make_env(env_id, seed=args.seed, device=model.device)
    returns, lengths = evaluate_policy(env, model.acting_policy, args.episodes, deterministic=not args.stochastic)
    print(
        f"{env_id}: mean return {returns.mean().item():.2f} +/- {returns.std(correction=0).item():.2f} over "
        f"{args.episodes} episodes (mean length {lengths.float().mean().item():.0f})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be >= 1, got {args.threads}.")
            torch.set_num_threads(args.threads)
        {"train": train, "eval": evaluate}[args.command](args)
    except TrainingInterrupted as err:  # preempted: the conventional exit status of a process ended by that signal
        print(f"crossq-trl: {err}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signal.Signals[err.signal].value) from err
    except (NonFiniteError, EnvStepError, CheckpointSaveError) as err:
        if isinstance(err, EnvStepError):
            traceback.print_exception(err)  # the env's own traceback
        notes = "".join(f"\n{note}" for note in getattr(err, "__notes__", []))
        print(f"crossq-trl: error: {err}{notes}", file=sys.stderr, flush=True)
        raise SystemExit(1) from err
    except (ValueError, FileNotFoundError, NotImplementedError, ImportError) as err:  # ImportError: a missing extra
        print(f"crossq-trl: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
