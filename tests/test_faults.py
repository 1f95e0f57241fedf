"""Faults during training: non-finite values, preemption signals, failing checkpoint writes and failing envs each
stop (or continue) as documented, with a checkpoint that resumes."""

from __future__ import annotations

import errno
import math
import os
import shutil
import signal
import threading

import gymnasium as gym
import pytest
import torch
from tensordict import TensorDict

from crossq_trl import CheckpointSaveError, CrossQ, EnvStepError, NonFiniteError, TrainingInterrupted
from crossq_trl.training import checkpoint as checkpoint_module
from crossq_trl.training.checkpoint import load_checkpoint
from crossq_trl.training.preemption import StopOnSignals

TINY = {"net_arch": [32, 32], "batch_size": 32, "compile": False, "learning_starts": 20, "seed": 0}


def assert_same_state(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def all_finite(state: dict) -> bool:
    return all(value.isfinite().all() for value in state.values() if value.is_floating_point())


def at_frame(frame: int, action):
    """A learn() callback that runs ``action(model)`` once, after the batch that ends at env step ``frame``."""

    def callback(model):
        if model.trainer.collected_frames == frame:
            action(model)

    return callback


class FaultyPendulum(gym.Wrapper):
    """Pendulum-v1 that raises in ``step``, or returns a NaN reward, at env step ``at`` (counted over episodes)."""

    def __init__(self, at: int, fault: str) -> None:
        super().__init__(gym.make("Pendulum-v1"))
        self.at, self.fault, self.steps = at, fault, 0

    def step(self, action):
        self.steps += 1
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.steps == self.at:
            if self.fault == "raise":
                raise RuntimeError("simulator exploded")
            reward = math.nan
        return obs, reward, terminated, truncated, info


# --- non-finite values -----------------------------------------------------------------------------------------


def poison_rewards(model) -> None:
    """NaN rewards in the whole replay buffer: the critic loss is NaN from the next update on."""
    model.replay_buffer.storage._storage.get(("next", "reward")).fill_(math.nan)


def test_nonfinite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    """A NaN critic loss (the actor, updated every 1000 updates only, stays finite and runs on) is found at the
    next checkpoint, with no sync before it; that checkpoint is not written, so the file on disk holds the finite
    weights of the one before, and the error names the quantities, their first update and the window."""
    path = tmp_path / "checkpoint.pt"
    model = CrossQ("MlpPolicy", "Pendulum-v1", **{**TINY, "policy_delay": 1000})
    with pytest.raises(NonFiniteError) as error:
        model.learn(200, callback=at_frame(45, poison_rewards), checkpoint_path=path, checkpoint_interval=20)
    # checkpoints at env steps 21, 42, 63; updates from step 20 on (update 26 ran at step 45)
    assert str(error.value).startswith(
        "Non-finite critic loss (from update 27), gradient norm (from update 27), parameters (from update 27), "
        "first seen in updates 24-44 (env steps 43-63). Training stopped; the last checkpoint, "
        f"{str(path)!r} from env step 42, was kept."
    )
    assert model.num_timesteps == 63
    saved = load_checkpoint(path)
    assert saved["num_timesteps"] == 42 and all_finite(saved["loss_module"])
    assert not all_finite(model.loss_module.state_dict())


def test_an_error_caused_by_nonfinite_values_is_reported_as_nonfinite():
    """A NaN critic makes the actor NaN, whose actions (or, eagerly, its sampling) fail first: the trainer reads
    the update's flag on any error and reports the root cause, with the error it caused as context."""
    model = CrossQ("MlpPolicy", "Pendulum-v1", **{**TINY, "policy_delay": 1})
    with pytest.raises(NonFiniteError, match=r"^Non-finite critic loss \(from update 27\), actor loss") as error:
        model.learn(200, callback=at_frame(45, poison_rewards))
    assert error.value.__context__ is not None
    assert "no checkpoint path was given, so nothing was saved" in str(error.value)


def test_nonfinite_reward_from_the_env_names_the_env_step(tmp_path):
    model = CrossQ("MlpPolicy", lambda: FaultyPendulum(at=37, fault="nan"), **TINY)
    with pytest.raises(NonFiniteError, match=r"^Non-finite next reward \(NaN or inf\) collected at env step 37\. "):
        model.learn(100)
    assert len(model.replay_buffer) == 36  # the NaN never reached the replay buffer


def test_transition_check_tells_large_finite_values_from_nonfinite_ones():
    """The check first sums the float values: large finite ones whose sum overflows still pass, and an inf among
    them is named with its key and env step."""
    model = CrossQ("MlpPolicy", "Pendulum-v1", **TINY)
    model.learn(5)
    large = torch.finfo(torch.float32).max
    transitions = TensorDict(  # [1 env, 2 steps]
        {"observation": torch.full((1, 2, 3), large), ("next", "reward"): torch.full((1, 2, 1), large)}, [1, 2]
    )
    model.trainer._check_transitions(transitions)
    transitions["observation"][0, 1, 2] = math.inf
    with pytest.raises(NonFiniteError, match=r"^Non-finite observation \(NaN or inf\) collected at env step 7\. "):
        model.trainer._check_transitions(transitions)


# --- preemption signals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT], ids=lambda s: s.name)
def test_preemption_signal_checkpoints_and_stops(tmp_path, signum):
    """The signal ends the current step, writes the checkpoint, raises TrainingInterrupted; the host's own handler
    is replaced only while learn() runs."""
    path = tmp_path / "checkpoint.pt"

    def host_handler(number, frame):
        raise AssertionError("the host's handler must not run during learn()")

    previous = signal.signal(signum, host_handler)
    try:
        model = CrossQ("MlpPolicy", "Pendulum-v1", **TINY)
        with pytest.raises(TrainingInterrupted) as error:
            model.learn(200, callback=at_frame(50, lambda m: os.kill(os.getpid(), signum)), checkpoint_path=path)
        assert signal.getsignal(signum) is host_handler
    finally:
        signal.signal(signum, previous)
    assert isinstance(error.value, KeyboardInterrupt)  # code that handles Ctrl-C around learn() handles this too
    assert (error.value.signal, error.value.env_step, error.value.checkpoint) == (signum.name, 50, str(path))
    assert f"Training stopped by {signum.name} at env step 50 of 200" in str(error.value)
    assert f"crossq-trl train --resume {path}" in str(error.value)
    saved = load_checkpoint(path)
    assert saved["num_timesteps"] == 50
    assert_same_state(saved["loss_module"], model.loss_module.state_dict())


def test_a_second_signal_acts_as_without_the_handler():
    calls = []
    # Python's own Ctrl-C handler before, as in a plain process (a local Ray started by other tests replaces it).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with StopOnSignals(calls.append):
            os.kill(os.getpid(), signal.SIGINT)
            assert calls == ["SIGINT"]
            with pytest.raises(KeyboardInterrupt):  # Python's own Ctrl-C handler is back
                os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == ["SIGINT"]


def test_signals_are_left_alone_outside_the_main_thread():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    caught = []

    def run():
        with pytest.warns(RuntimeWarning, match="outside the main thread"), StopOnSignals(print):
            caught.append({signum: signal.getsignal(signum) for signum in before})

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert caught == [before]


# --- failing checkpoint writes ---------------------------------------------------------------------------------


def failing(exception: OSError, times: int, real):
    """``real`` that raises ``exception`` on its first ``times`` calls after the first successful one."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(None)
        if 1 < len(calls) <= 1 + times:
            raise exception
        return real(*args, **kwargs)

    return wrapper


FAULTS = {
    "disk full": ("torch", "save", OSError(errno.ENOSPC, "No space left on device")),
    "permission denied": ("os", "replace", PermissionError(errno.EACCES, "Permission denied")),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_failing_checkpoint_write_stops_by_default_and_keeps_the_previous_file(tmp_path, monkeypatch, fault):
    module_name, function, exception = FAULTS[fault]
    module = getattr(checkpoint_module, module_name)
    monkeypatch.setattr(module, function, failing(exception, 1, getattr(module, function)))
    path = tmp_path / "checkpoint.pt"
    model = CrossQ("MlpPolicy", "Pendulum-v1", **TINY)
    with pytest.raises(CheckpointSaveError) as error:
        model.learn(200, checkpoint_path=path, checkpoint_interval=20)
    assert f"Could not write the checkpoint {str(path)!r} at env step 42 ({exception})" in str(error.value)
    assert "the previous checkpoint there (env step 21) is intact" in str(error.value)
    assert error.value.__cause__ is exception
    assert model.num_timesteps == 42
    assert load_checkpoint(path)["num_timesteps"] == 21
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary file left behind


def test_failing_checkpoint_write_with_continue_warns_and_retries(tmp_path, monkeypatch):
    _, _, exception = FAULTS["disk full"]
    monkeypatch.setattr(checkpoint_module.torch, "save", failing(exception, 2, checkpoint_module.torch.save))
    path = tmp_path / "checkpoint.pt"
    model = CrossQ("MlpPolicy", "Pendulum-v1", **TINY)
    with pytest.warns(RuntimeWarning, match="No space left on device.*Training continues") as warnings:
        model.learn(100, checkpoint_path=path, checkpoint_interval=20, on_checkpoint_error="continue")
    assert len(warnings) == 2
    assert model.num_timesteps == 100
    saved = load_checkpoint(path)
    assert saved["num_timesteps"] == 100
    assert_same_state(saved["loss_module"], model.loss_module.state_dict())


def test_removed_checkpoint_directory_is_created_again(tmp_path):
    folder = tmp_path / "run"
    model = CrossQ("MlpPolicy", "Pendulum-v1", **TINY)
    removed = at_frame(50, lambda m: shutil.rmtree(folder))  # after the checkpoint of env step 42
    model.learn(100, callback=removed, checkpoint_path=folder / "ckpt.pt", checkpoint_interval=20)
    assert load_checkpoint(folder / "ckpt.pt")["num_timesteps"] == 100


def test_on_checkpoint_error_is_checked():
    with pytest.raises(ValueError, match="on_checkpoint_error must be 'stop' or 'continue', got 'ignore'"):
        CrossQ("MlpPolicy", "Pendulum-v1", **TINY).learn(10, on_checkpoint_error="ignore")


# --- failing envs ----------------------------------------------------------------------------------------------


def test_env_exception_checkpoints_the_state_before_the_failing_step(tmp_path):
    path = tmp_path / "checkpoint.pt"
    model = CrossQ("MlpPolicy", lambda: FaultyPendulum(at=57, fault="raise"), **TINY)
    with pytest.raises(EnvStepError, match=r"env\.step raised RuntimeError: simulator exploded") as error:
        model.learn(100, checkpoint_path=path, checkpoint_interval=10**6)
    assert isinstance(error.value.__cause__, RuntimeError)
    assert error.value.__cause__.__traceback__ is not None  # the env's own traceback travels with it
    assert "Training stopped at env step 57" in error.value.__notes__[0]
    saved = load_checkpoint(path)
    assert saved["num_timesteps"] == 56 and saved["env"] is None
    assert_same_state(saved["loss_module"], model.loss_module.state_dict())

    resumed = CrossQ.resume(path, env=lambda: FaultyPendulum(at=-1, fault="raise"))
    assert resumed.num_timesteps == 100 and load_checkpoint(path)["num_timesteps"] == 100


def test_dead_env_worker_stops_with_a_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    model = CrossQ("MlpPolicy", "Pendulum-v1", n_envs=2, **TINY)

    def kill_a_worker(model):
        os.kill(model.env._workers[1].pid, signal.SIGKILL)

    with pytest.raises(EnvStepError, match=r"Collecting a batch failed: RuntimeError: .*worker 1 dead") as error:
        model.learn(200, callback=at_frame(40, kill_a_worker), checkpoint_path=path, checkpoint_interval=10**6)
    assert "Training stopped after env step 40" in error.value.__notes__[0]
    saved = load_checkpoint(path)
    assert saved["num_timesteps"] == 40
    assert_same_state(saved["loss_module"], model.loss_module.state_dict())
