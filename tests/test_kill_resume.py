"""A real ``crossq-trl train`` process, killed (SIGKILL) or preempted (SIGTERM) at a random point after its first
checkpoint, then resumed with ``--resume``, ends at the step count and with the parameters, bit for bit, of a run
that was never interrupted (CPU, fixed seed)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crossq_trl.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# the package of this checkout, whatever is installed
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
TOTAL = 400
FLAGS = [
    *("Pendulum-v1", "--total-timesteps", str(TOTAL), "--learning-starts", "100", "--checkpoint-interval", "20"),
    *("--seed", "3", "--no-compile", "--net-arch", "[32, 32]", "--batch-size", "32", "--policy-delay", "2"),
    *("--logger", "none", "--final-eval-episodes", "1", "--threads", "1"),
]
TIMEOUT = 120


def crossq_trl(*args: str) -> list[str]:
    return [sys.executable, "-m", "crossq_trl.cli", *args]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(crossq_trl(*args), env=ENV, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    return result


def assert_same_model(actual: dict, expected: dict) -> None:
    """Same step count, weights, BRN statistics, temperature and optimizer state."""
    assert actual["num_timesteps"] == expected["num_timesteps"] == TOTAL
    assert actual["loss_module"].keys() == expected["loss_module"].keys()
    for key, value in expected["loss_module"].items():
        assert torch.equal(actual["loss_module"][key], value), key
    for name, optimizer in expected["update"]["optimizers"].items():
        for index, state in optimizer["state"].items():
            for key, value in state.items():
                assert torch.equal(actual["update"]["optimizers"][name]["state"][index][key], value), (name, key)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    log_dir = tmp_path_factory.mktemp("uninterrupted")
    run("train", *FLAGS, "--log-dir", str(log_dir), cwd=log_dir)
    return load_checkpoint(log_dir / "model.pt")


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_killed_training_resumes_bit_identical(uninterrupted, tmp_path, signum):
    checkpoint = tmp_path / "checkpoint.pt"
    process = subprocess.Popen(
        crossq_trl("train", *FLAGS, "--log-dir", str(tmp_path)),
        env=ENV,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    delay = random.uniform(0.0, 0.4)  # the first checkpoint is at step 100: 300 steps with updates remain
    time.sleep(delay)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=TIMEOUT)
    stopped_at = load_checkpoint(checkpoint)["num_timesteps"]
    assert 100 <= stopped_at < TOTAL, f"{signum.name} {delay:.2f} s after the first checkpoint came too late"
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:  # finished the step, wrote the checkpoint, said so, exited as a process ended by SIGTERM does
        assert process.returncode == 128 + signal.SIGTERM, stderr
        assert f"Training stopped by SIGTERM at env step {stopped_at} of {TOTAL}; checkpoint written to" in stderr
        assert f"crossq-trl train --resume {checkpoint}" in stderr

    result = run("train", "--resume", str(checkpoint), "--log-dir", str(tmp_path), "--threads", "1", cwd=tmp_path)
    assert f"Done: {TOTAL} steps" in result.stdout
    assert_same_model(load_checkpoint(tmp_path / "model.pt"), uninterrupted)
    assert load_checkpoint(checkpoint)["num_timesteps"] == TOTAL
