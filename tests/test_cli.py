"""The ``crossq-trl`` command line: train, eval, resume, --help and error reporting."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from crossq_trl import CrossQ, CrossQConfig
from crossq_trl.cli import build_parser, config_kwargs, main
from crossq_trl.training import checkpoint as checkpoint_module
from crossq_trl.training.checkpoint import load_checkpoint

TINY_FLAGS = ["--no-compile", "--net-arch", "[32, 32]", "--batch-size", "32"]


def test_train_then_eval(tmp_path, capsys):
    log_dir = tmp_path / "run"
    main(
        [
            "train",
            "Pendulum-v1",
            "--total-timesteps",
            "250",
            "--log-dir",
            str(log_dir),
            "--learning-starts",
            "50",
            "--policy-delay",
            "2",
            "--seed",
            "0",
            "--log-interval",
            "1",
            "--final-eval-episodes",
            "1",
            *TINY_FLAGS,
        ]
    )
    out = capsys.readouterr().out
    assert "Training CrossQ on Pendulum-v1 for 250 steps (device cpu)" in out
    # the progress report after the first (200-step) episode
    assert re.search(
        r"time/total_timesteps 200 \| time/episodes 1 \| train/n_updates 151 \| rollout/ep_rew_mean -", out
    )
    done = re.search(
        r"Done: 250 steps in \d+ s \| final evaluation (-?[\d.]+) \+/- 0\.0 over 1 episodes \| model saved to (\S+)",
        out,
    )
    assert done, out
    final_return, model_path = float(done.group(1)), done.group(2)
    assert model_path == str(log_dir / "model.pt")

    # files: model, training checkpoint, CSV scalars
    assert (log_dir / "model.pt").is_file() and (log_dir / "checkpoint.pt").is_file()
    checkpoint = load_checkpoint(log_dir / "checkpoint.pt")
    assert checkpoint["kind"] == "training" and checkpoint["num_timesteps"] == 250
    scalars = log_dir / "CrossQ" / "scalars"
    for name in ("rollout/ep_rew_mean", "train/loss_qvalue", "train/loss_actor", "train/alpha", "train/n_updates"):
        assert (scalars / f"{name}.csv").is_file(), name
    assert (scalars / "train" / "n_updates.csv").read_text().split() == ["200,151.0"]

    # the flags reached the model
    model = CrossQ.load(log_dir / "model.pt")
    assert model.config.net_arch == [32, 32] and model.config.batch_size == 32 and model.config.policy_delay == 2
    assert model.config.learning_starts == 50 and model.config.seed == 0 and model.config.compile is False
    assert model.num_timesteps == 250 and model.update.num_updates == 201

    # eval on the saved model, on the seed of the final evaluation: the same return
    main(["eval", str(log_dir / "model.pt"), "--episodes", "1", "--seed", "20000"])
    out = capsys.readouterr().out
    result = re.search(r"Pendulum-v1: mean return (-?[\d.]+) \+/- 0\.00 over 1 episodes \(mean length 200\)", out)
    assert result, out
    assert float(result.group(1)) == pytest.approx(final_return, abs=0.051)

    main(["eval", str(log_dir / "model.pt"), "--episodes", "2", "--stochastic"])
    assert re.search(r"Pendulum-v1: mean return -[\d.]+ \+/- [\d.]+ over 2 episodes", capsys.readouterr().out)


def test_train_resume(tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint.pt"
    model = CrossQ(
        "MlpPolicy", "Pendulum-v1", learning_starts=10, seed=0, net_arch=[32, 32], batch_size=32, compile=False
    )
    model.learn(60, callback=lambda m: m.trainer.collected_frames < 30, checkpoint_path=checkpoint)
    assert load_checkpoint(checkpoint)["num_timesteps"] == 30
    capsys.readouterr()

    main(["train", "--resume", str(checkpoint), "--log-dir", str(tmp_path / "out"), "--final-eval-episodes", "1"])
    out = capsys.readouterr().out
    assert f"Resuming {checkpoint}" in out
    assert re.search(r"Done: 60 steps in \d+ s \| final evaluation", out)
    assert load_checkpoint(checkpoint)["num_timesteps"] == 60
    assert CrossQ.load(tmp_path / "out" / "model.pt").update.num_updates == 51


def test_train_help_lists_every_config_field_with_its_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(CrossQConfig):
        flag = "--" + field.name.replace("_", "-")
        default = re.escape(f"(default: {field.default})")
        pattern = rf"{flag}(, --no-{flag[2:]})?( VALUE)? CrossQConfig\.{field.name} {default}"
        assert re.search(pattern, text), (field.name, pattern)
    assert "--total-timesteps TOTAL_TIMESTEPS env steps to train for (default: 20000)" in text


def test_flag_values_are_parsed_as_python_literals():
    args = build_parser().parse_args(
        [
            "train",
            "--train-freq",
            "(2, 'episode')",
            "--ent-coef",
            "auto_0.1",
            "--net-arch",
            "{'pi': [8], 'qf': [16]}",
            "--learning-rate",
            "3e-4",
            "--no-batch-norm",
            "--optimizer-kwargs",
            "{'betas': (0.9, 0.999)}",
        ]
    )
    config = CrossQConfig(**config_kwargs(args))
    assert config.train_freq == (2, "episode")
    assert config.entropy_coefficient() == (pytest.approx(0.1), False)
    assert config.actor_arch() == [8] and config.critic_arch() == [16]
    assert config.learning_rate == pytest.approx(3e-4)
    assert config.batch_norm is False
    assert config.optimizer_kwargs == {"betas": (0.9, 0.999)}
    assert config_kwargs(build_parser().parse_args(["train"])) == {}  # no flag: the config's (or preset's) defaults


def test_errors_are_reported_with_exit_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(tmp_path / "missing.pt")])
    assert exit_info.value.code == 2
    assert "crossq-trl: error: No checkpoint file" in capsys.readouterr().err

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(corrupt)])
    assert exit_info.value.code == 2
    assert "is not a readable crossq_trl checkpoint" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--batch-size", "0", "--log-dir", str(tmp_path / "bad"), "--total-timesteps", "10"])
    assert exit_info.value.code == 2
    assert "CrossQConfig.batch_size must be an integer >= 1, got 0" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "CartPole-v1", "--log-dir", str(tmp_path / "bad"), *TINY_FLAGS])
    assert exit_info.value.code == 2
    assert "continuous Box action space" in capsys.readouterr().err


def test_faults_are_reported_with_exit_code_1(tmp_path, capsys, monkeypatch):
    """A training fault (here: every checkpoint write fails, disk full) ends the command with its message."""

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    flags = ["--total-timesteps", "100", "--learning-starts", "50", "--log-dir", str(tmp_path), *TINY_FLAGS]
    for policy in ("stop", "continue"):  # with 'continue' the final save still raises: nothing later retries it
        with pytest.raises(SystemExit) as exit_info:
            main(["train", *flags, "--checkpoint-interval", "20", "--on-checkpoint-error", policy])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert "crossq-trl: error: Could not write the checkpoint" in err and "No space left on device" in err


def test_threads_flag_sets_torch_threads_before_running(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    with pytest.raises(SystemExit):  # the missing file fails after the threads are set
        main(["eval", str(tmp_path / "missing.pt"), "--threads", "3"])
    assert calls == [3]
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--threads", "0", "--log-dir", str(tmp_path / "bad")])
    assert exit_info.value.code == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err
    assert calls == [3]
