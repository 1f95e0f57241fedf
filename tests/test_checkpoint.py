"""Checkpoints: atomic writes, clear errors on bad files, replay-buffer files and exact resumption of a run."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from crossq_trl import CheckpointError, CrossQ
from crossq_trl.training import checkpoint as checkpoint_module
from crossq_trl.training.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint

TINY = {"net_arch": [32, 32], "batch_size": 32, "compile": False}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    model = CrossQ("MlpPolicy", "Pendulum-v1", learning_starts=20, buffer_size=50, seed=1, **TINY)
    model.learn(80)  # more steps than the buffer holds: its write cursor has wrapped
    path = model.save(tmp_path_factory.mktemp("saved") / "model.pt")
    return model, path


def assert_same_state(actual: dict, expected: dict) -> None:
    """Equal tensors, and equal values in nested dicts (a module's extra state, e.g. the gSDE matrices)."""
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_same_state(actual[key], value)
        elif isinstance(value, torch.Tensor):
            assert torch.equal(actual[key], value), key
        else:
            assert actual[key] == value, key


class NumpyNormalNoise:
    """An object with sb3's ActionNoise protocol drawing from NumPy's global generator, as sb3's noises do."""

    def __call__(self) -> np.ndarray:
        return np.random.normal(0.0, 0.3, size=1).astype(np.float32)

    def reset(self) -> None:
        pass


# --- file-level errors ------------------------------------------------------------------------------------------


def test_round_trip_of_a_payload(tmp_path):
    payload = {"kind": "test", "tensor": torch.arange(5), "nested": {"x": 1.5}}
    path = save_checkpoint(tmp_path / "sub" / "file.pt", payload)
    assert path == tmp_path / "sub" / "file.pt"
    data = load_checkpoint(path)
    assert data["format"] == "crossq_trl" and data["format_version"] == FORMAT_VERSION
    assert torch.equal(data["tensor"], payload["tensor"]) and data["nested"] == {"x": 1.5}


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="No checkpoint file"):
        load_checkpoint(missing)
    with pytest.raises(FileNotFoundError):
        CrossQ.load(missing)
    with pytest.raises(FileNotFoundError):
        CrossQ.resume(missing)


def test_truncated_file(saved_model, tmp_path):
    _, path = saved_model
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable crossq_trl checkpoint"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        CrossQ.load(truncated)


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage bytes" * 100, pickle.dumps([1, 2, 3])[:5]])
def test_garbage_file(tmp_path, content):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable crossq_trl checkpoint"):
        load_checkpoint(garbage)


@pytest.mark.parametrize("foreign", [{"a": 1}, [1, 2], {"format": "sb3", "format_version": 1}])
def test_foreign_file(tmp_path, foreign):
    path = tmp_path / "foreign.pt"
    torch.save(foreign, path)
    with pytest.raises(CheckpointError, match="foreign file"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="foreign file"):
        CrossQ.load(path)


def test_older_format_version(tmp_path):
    """A file of format 1 (crossq_trl 0.1, other critic weight layout) raises CheckpointError saying so."""
    path = tmp_path / "old.pt"
    torch.save({"format": "crossq_trl", "format_version": 1, "kind": "model"}, path)
    with pytest.raises(CheckpointError, match=r"crossq_trl 0\.1"):
        load_checkpoint(path)


def test_newer_format_version(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format": "crossq_trl", "format_version": FORMAT_VERSION + 1, "kind": "model"}, path)
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}, newer"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="upgrade crossq_trl"):
        CrossQ.load(path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_wrong_kind_of_file(saved_model, tmp_path):
    model, model_path = saved_model
    buffer_path = model.save_replay_buffer(tmp_path / "buffer.pt")
    with pytest.raises(CheckpointError, match="holds no CrossQ model"):
        CrossQ.load(buffer_path)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        CrossQ.resume(model_path)
    with pytest.raises(CheckpointError, match="holds no replay buffer"):
        model.load_replay_buffer(model_path)


def test_atomic_write_keeps_the_previous_file(saved_model, tmp_path, monkeypatch):
    model, _ = saved_model
    path = model.save(tmp_path / "model.pt")
    before = path.read_bytes()
    real_save = torch.save

    def crash_mid_write(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "new.pt")
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp file, no half-written new.pt
    CrossQ.load(path)  # still a valid model


# --- replay buffer files -----------------------------------------------------------------------------------------


def test_replay_buffer_round_trip(saved_model, tmp_path):
    model, _ = saved_model
    buffer_path = model.save_replay_buffer(tmp_path / "buffer.pt")
    other = CrossQ("MlpPolicy", "Pendulum-v1", buffer_size=50, seed=2, **TINY)
    other.replay_buffer.extend(model.replay_buffer[:5].clone())  # stale content is replaced, not kept
    other.load_replay_buffer(buffer_path)

    assert len(other.replay_buffer) == len(model.replay_buffer) == 50
    saved, loaded = model.replay_buffer[:], other.replay_buffer[:]
    assert set(saved.keys(True, True)) == set(loaded.keys(True, True))
    for key in saved.keys(True, True):
        assert torch.equal(loaded[key], saved[key]), key
    assert model.replay_buffer._writer.state_dict() == {"_cursor": 80 % 50, "_write_count": 80}
    assert other.replay_buffer._writer.state_dict() == model.replay_buffer._writer.state_dict()
    # the next write lands in the same slot of both buffers
    extra = model.replay_buffer[:1].clone()
    extra["observation"] += 100.0
    model_copy = CrossQ("MlpPolicy", "Pendulum-v1", buffer_size=50, **TINY)
    model_copy.load_replay_buffer(buffer_path)
    for buffer in (other.replay_buffer, model_copy.replay_buffer):
        buffer.extend(extra)
        assert torch.equal(buffer[30]["observation"], extra[0]["observation"])
    assert len(other.replay_buffer) == 50


def test_replay_buffer_too_small(saved_model, tmp_path):
    model, _ = saved_model
    buffer_path = model.save_replay_buffer(tmp_path / "buffer.pt")
    small = CrossQ("MlpPolicy", "Pendulum-v1", buffer_size=10, **TINY)
    with pytest.raises(ValueError, match="larger buffer_size"):
        small.load_replay_buffer(buffer_path)


def test_empty_replay_buffer_round_trip(tmp_path):
    model = CrossQ("MlpPolicy", "Pendulum-v1", **TINY)
    path = model.save_replay_buffer(tmp_path / "empty.pt")
    other = CrossQ("MlpPolicy", "Pendulum-v1", **TINY)
    other.load_replay_buffer(path)
    assert len(other.replay_buffer) == 0


# --- training checkpoints and resumption -------------------------------------------------------------------------


RESUME_CASES = [("Pendulum-v1", 120), ("InvertedPendulum-v5", 60)]


@pytest.mark.parametrize(("env_id", "n"), RESUME_CASES, ids=[env for env, _ in RESUME_CASES])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, env_id, n):
    """Stop a run at N of 2N steps, resume it from its checkpoint: same weights, BRN statistics, temperature,
    optimizer state and replay buffer as a run of 2N steps that was never stopped."""
    kwargs = {"learning_starts": 40, "policy_delay": 2, "seed": 11, **TINY}
    path = tmp_path / "checkpoint.pt"
    interrupted = CrossQ("MlpPolicy", env_id, **kwargs)
    interrupted.learn(
        2 * n, callback=lambda m: m.trainer.collected_frames < n, checkpoint_path=path, checkpoint_interval=10**9
    )
    assert interrupted.num_timesteps == n and path.is_file()
    data = load_checkpoint(path)
    assert data["kind"] == "training" and data["num_timesteps"] == n and data["total_timesteps"] == 2 * n

    resumed = CrossQ.resume(path)
    reference = CrossQ("MlpPolicy", env_id, **kwargs).learn(2 * n)

    assert resumed.num_timesteps == reference.num_timesteps == 2 * n
    assert resumed.update.num_updates == reference.update.num_updates == 2 * n - 40 + 1
    assert_same_state(resumed.loss_module.state_dict(), reference.loss_module.state_dict())
    resumed_data, reference_data = resumed.replay_buffer[:], reference.replay_buffer[:]
    for key in reference_data.keys(True, True):
        assert torch.equal(resumed_data[key], reference_data[key]), key
    for name in ("critic", "actor", "alpha"):
        resumed_optim = getattr(resumed.update.optimizers, name).state_dict()["state"]
        reference_optim = getattr(reference.update.optimizers, name).state_dict()["state"]
        for index, state in reference_optim.items():
            assert_same_state(resumed_optim[index], state)
    # the checkpoint kept being updated to the end of the run
    assert load_checkpoint(path)["num_timesteps"] == 2 * n


STOP_AT = 120


def stopped_resumed_and_uninterrupted(tmp_path, kwargs: dict) -> tuple[CrossQ, CrossQ]:
    """A Pendulum run stopped at ``STOP_AT`` steps with a checkpoint and resumed to twice that, and the same run
    uninterrupted; both end at ``2 * STOP_AT`` steps."""
    path, n = tmp_path / "checkpoint.pt", STOP_AT
    interrupted = CrossQ("MlpPolicy", "Pendulum-v1", **kwargs)
    interrupted.learn(
        2 * n, callback=lambda m: m.trainer.collected_frames < n, checkpoint_path=path, checkpoint_interval=10**9
    )
    resumed = CrossQ.resume(path)
    reference = CrossQ("MlpPolicy", "Pendulum-v1", **kwargs).learn(2 * n)
    assert resumed.num_timesteps == reference.num_timesteps == 2 * n
    return resumed, reference


EXPLORATION_CASES = {
    "gsde_and_ou": {"use_sde": True, "sde_sample_freq": 7, "train_freq": 5, "action_noise": "ou_0.3"},
    "sb3_noise_object": {"action_noise": NumpyNormalNoise()},
}


@pytest.mark.parametrize("exploration", EXPLORATION_CASES.values(), ids=EXPLORATION_CASES.keys())
def test_resume_with_exploration_is_bit_identical(tmp_path, exploration):
    """Resuming a run with gSDE (matrices held across the stop) and an action noise process (its state, or the
    NumPy generator an sb3 noise draws from) gives the uninterrupted run's weights, noise state and transitions."""
    kwargs = {"learning_starts": 40, "policy_delay": 2, "seed": 11, **TINY, **exploration}
    resumed, reference = stopped_resumed_and_uninterrupted(tmp_path, kwargs)
    assert_same_state(resumed.loss_module.state_dict(), reference.loss_module.state_dict())
    tensors = lambda state: {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}  # noqa: E731
    assert_same_state(tensors(resumed.action_noise.state_dict()), tensors(reference.action_noise.state_dict()))
    resumed_actions, reference_actions = resumed.replay_buffer[:]["action"], reference.replay_buffer[:]["action"]
    assert torch.equal(resumed_actions, reference_actions)


def test_resume_with_n_step_targets_is_bit_identical(tmp_path):
    """n-step transitions are built from the stored one-step ones when sampling: a resumed ``n_steps=3`` run
    (buffer, RNG and episode restored) samples the uninterrupted run's windows and ends with its weights."""
    kwargs = {"learning_starts": 40, "policy_delay": 2, "seed": 11, "n_steps": 3, **TINY}
    resumed, reference = stopped_resumed_and_uninterrupted(tmp_path, kwargs)
    assert resumed.replay_buffer.n_steps == reference.replay_buffer.n_steps == 3
    assert_same_state(resumed.loss_module.state_dict(), reference.loss_module.state_dict())
    one_step = CrossQ("MlpPolicy", "Pendulum-v1", **{**kwargs, "n_steps": 1}).learn(STOP_AT * 2)
    ref_state, one_step_state = reference.loss_module.state_dict(), one_step.loss_module.state_dict()
    assert any(not torch.equal(one_step_state[key], value) for key, value in ref_state.items())  # n-step mattered


def test_save_load_keeps_the_noise_state_and_gsde_matrices(tmp_path):
    model = CrossQ("MlpPolicy", "Pendulum-v1", learning_starts=20, use_sde=True, action_noise="ou_0.3", seed=3, **TINY)
    model.learn(60, callback=lambda m: m.trainer.collected_frames < 50)  # stopped mid-rollout
    loaded = CrossQ.load(model.save(tmp_path / "model.pt"))
    assert_same_state(loaded.loss_module.state_dict(), model.loss_module.state_dict())
    assert torch.equal(loaded.action_noise.state, model.action_noise.state)
    assert not torch.equal(model.action_noise.state, torch.zeros_like(model.action_noise.state))
    assert loaded.config.use_sde and loaded.config.action_noise == "ou_0.3"


def test_interrupted_run_differs_without_resume(tmp_path):
    """Control for the test above: a plain second learn() from the stopped model does not reproduce the
    uninterrupted run (it restarts its episode and RNG streams), so the equality above is not trivial."""
    kwargs = {"learning_starts": 40, "policy_delay": 2, "seed": 11, **TINY}
    stopped = CrossQ("MlpPolicy", "Pendulum-v1", **kwargs)
    stopped.learn(240, callback=lambda m: m.trainer.collected_frames < 120)
    stopped.set_random_seed(99)
    stopped.learn(120, reset_num_timesteps=False)
    reference = CrossQ("MlpPolicy", "Pendulum-v1", **kwargs).learn(240)
    assert stopped.num_timesteps == 240
    ref_state, state = reference.loss_module.state_dict(), stopped.loss_module.state_dict()
    assert any(not torch.equal(state[key], value) for key, value in ref_state.items())


def test_load_a_training_checkpoint_as_a_model(tmp_path):
    path = tmp_path / "checkpoint.pt"
    model = CrossQ("MlpPolicy", "Pendulum-v1", learning_starts=10, seed=0, **TINY)
    model.learn(30, checkpoint_path=path)
    loaded = CrossQ.load(path)
    assert_same_state(loaded.loss_module.state_dict(), model.loss_module.state_dict())
    assert loaded.update.num_updates == model.update.num_updates == 21
    assert loaded.num_timesteps == 30
