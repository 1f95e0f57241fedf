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


def wait_for_writes(path: Path, count: int, process: subprocess.Popen) -> None:
    """Wait until ``path`` was written ``count`` times (each atomic write replaces the file: a new inode/mtime)."""
    seen, last = 0, None
    deadline = time.monotonic() + TIMEOUT
    while seen < count and process.poll() is None and time.monotonic() < deadline:
        try:
            stat = path.stat()
            current = (stat.st_ino, stat.st_mtime_ns)
        except FileNotFoundError:
            current = None
        if current is not None and current != last:
            seen, last = seen + 1, current
        time.sleep(0.001)


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
    # A random point after the first checkpoint (at step 100; then one every 21 steps): after 1 to 6 checkpoints,
    # counted by progress rather than time so that it falls within the run on a fast machine too, plus a random
    # fraction of a step or a few.
    writes = random.randint(1, 6)
    wait_for_writes(checkpoint, writes, process)
    delay = random.uniform(0.0, 0.02)
    time.sleep(delay)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=TIMEOUT)
    stopped_at = load_checkpoint(checkpoint)["num_timesteps"]
    print(f"{signum.name} after {writes} checkpoints + {delay:.3f} s: resuming from env step {stopped_at}")
    assert 100 <= stopped_at < TOTAL, f"{signum.name} after {writes} checkpoints and {delay:.3f} s came too late"
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
