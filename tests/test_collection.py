"""The lean collection path: LeanGymEnv against TorchRL's GymWrapper and transforms, CrossQCollector against
TorchRL's Collector, and the replay buffer's fast path against TorchRL's generic one."""

from __future__ import annotations

import tempfile

import gymnasium as gym
import pytest
import torch
from tensordict import MemoryMappedTensor, TensorDict
from tensordict.nn import TensorDictSequential
from torchrl.collectors import Collector
from torchrl.data import (
    LazyMemmapStorage,
    LazyTensorStorage,
    RandomSampler,
    SamplerWithoutReplacement,
    TensorDictReplayBuffer,
    TensorStorage,
)
from torchrl.envs import Compose, DoubleToFloat, GymWrapper, RewardSum, StepCounter, TransformedEnv
from torchrl.envs.utils import ExplorationType, check_env_specs

from crossq_trl import ActingPolicy, CrossQLoss, make_crossq_actor, make_crossq_critic, make_env, make_replay_buffer
from crossq_trl.exploration import AdditiveActionNoise, OrnsteinUhlenbeckActionNoise
from crossq_trl.training.collector import CrossQCollector
from crossq_trl.training.faults import EnvStepError
from crossq_trl.training.lean_gym_env import LeanGymEnv
from crossq_trl.training.replay_buffer import CrossQReplayBuffer


def reference_env(env_id: str) -> TransformedEnv:
    """What make_env built before LeanGymEnv: GymWrapper plus the transforms."""
    return TransformedEnv(GymWrapper(gym.make(env_id)), Compose(DoubleToFloat(), RewardSum(), StepCounter()))


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "InvertedPendulum-v5"])
def test_lean_env_gives_the_transformed_gym_wrapper_rollout(env_id):
    """Same seed, same actions: the same observations, rewards, flags, episode returns and step counts as
    GymWrapper + DoubleToFloat + RewardSum + StepCounter, across an episode end (InvertedPendulum terminates)."""
    lean, reference = LeanGymEnv(gym.make(env_id)), reference_env(env_id)
    check_env_specs(lean)
    for env in (lean, reference):
        env.set_seed(3)
    actions = torch.rand(300, *lean.action_spec.shape) * 2 - 1
    actions = actions * lean.action_spec.space.high
    rollouts = []
    for env in (lean, reference):
        td = env.reset()
        steps = []
        for action in actions:
            td.set("action", action)
            step, td = env.step_and_maybe_reset(td)
            steps.append(step.select(*step.keys(True, True), strict=False))
        rollouts.append(torch.stack(steps))
    ours, want = rollouts
    assert want.get(("next", "done")).any() or env_id == "Pendulum-v1"
    for key in want.keys(True, True):
        if key in ours.keys(True, True):
            torch.testing.assert_close(ours.get(key), want.get(key), msg=str(key))
    assert {("next", "episode_reward"), ("next", "step_count"), ("next", "reward"), "observation"} <= set(
        ours.keys(True, True)
    )


def test_lean_env_random_actions_are_the_action_specs():
    """rand_action draws the numbers action_spec.rand() draws (same generator state, same values, in bounds)."""
    env = LeanGymEnv(gym.make("Pendulum-v1"))
    torch.manual_seed(0)
    ours = torch.stack([env.rand_action()["action"] for _ in range(50)])
    torch.manual_seed(0)
    want = torch.stack([env.action_spec.rand() for _ in range(50)])
    torch.testing.assert_close(ours, want, rtol=0, atol=0)
    assert (ours >= -2).all() and (ours <= 2).all()


def test_make_env_builds_lean_envs_and_keeps_other_torchrl_envs():
    assert isinstance(make_env("Pendulum-v1"), LeanGymEnv)
    wrapped = make_env(GymWrapper(gym.make("Pendulum-v1")))
    assert isinstance(wrapped, TransformedEnv)
    assert {"episode_reward", "step_count"} <= set(wrapped.observation_spec.keys())


@pytest.mark.parametrize("acting", [False, True], ids=["actor", "acting_policy"])
@pytest.mark.parametrize("random_frames", [0, 300])
def test_crossq_collector_collects_what_torchrls_collector_collects(random_frames, acting):
    """Same env seed, policy and torch seed: the lean loop yields the transitions of TorchRL's generic loop (random
    phase in long chunks included, then one step per batch). The actor writes its distribution's entries too and
    steps through the per-step loop; the ActingPolicy writes the action only, and its steps are buffered."""
    collected = []
    for collector_class in (Collector, CrossQCollector):
        torch.manual_seed(0)
        env = make_env("Pendulum-v1", seed=0)
        actor = make_crossq_actor(env, net_arch=[8]).eval()
        policy = ActingPolicy(actor) if acting else actor
        collector = collector_class(
            env,
            policy,
            frames_per_batch=1,
            total_frames=400,
            init_random_frames=random_frames,
            exploration_type=ExplorationType.RANDOM,
            auto_register_policy_transforms=False,
        )
        batches = [
            batch.select("observation", "action", ("next", "reward"), ("next", "done")).clone() for batch in collector
        ]
        collected.append((torch.cat(batches), [batch.numel() for batch in batches]))
        if collector_class is CrossQCollector:
            assert collector._policy_writes_action_only == acting
        collector.shutdown()
    (want, want_sizes), (ours, our_sizes) = collected
    torch.testing.assert_close(ours, want)
    assert want_sizes == [1] * 400
    expected_sizes = ([300] if random_frames else []) + [1] * (400 - random_frames)
    assert our_sizes == expected_sizes


def generic_and_fast_buffers(capacity: int = 7, storage=LazyTensorStorage):
    generic = TensorDictReplayBuffer(storage=storage(capacity), sampler=RandomSampler(), batch_size=4)
    fast = CrossQReplayBuffer(storage=storage(capacity), sampler=RandomSampler(), batch_size=4)
    return generic, fast


def transitions(n: int, start: int, dtype: torch.dtype = torch.float32) -> TensorDict:
    values = torch.arange(start, start + n, dtype=dtype)
    return TensorDict(
        {"observation": values[:, None].expand(n, 3).clone(), ("next", "reward"): values[:, None].clone()}, [n]
    )


def deviceless_storage(capacity: int) -> TensorStorage:
    """A storage given its (device-less) TensorDict, so that its device is None."""
    return TensorStorage(transitions(capacity, 0).set("index", torch.zeros(capacity, dtype=torch.long)), device="auto")


@pytest.mark.parametrize("kind", ["memory", "bfloat16", "memmap", "deviceless"])
def test_replay_fast_path_stores_and_samples_what_the_generic_one_does(kind, tmp_path):
    """Extends of 1 and of several transitions (the cursor wrapping around the capacity), then samples under the
    same seed: the fast buffer holds, reports and returns exactly what TorchRL's generic buffer does (a memory-mapped
    one in its files too)."""
    storages = {
        "memory": LazyTensorStorage,  # written through numpy views of the stored tensors
        "bfloat16": LazyTensorStorage,  # a dtype numpy lacks: written by torch
        "memmap": lambda capacity: LazyMemmapStorage(capacity, scratch_dir=tempfile.mkdtemp(dir=tmp_path)),
        "deviceless": deviceless_storage,  # samples built by TensorDict's checked constructor
    }
    dtype = torch.bfloat16 if kind == "bfloat16" else torch.float32
    generic, fast = generic_and_fast_buffers(storage=storages[kind])
    start = 0
    for n in (1, 3, 1, 4, 2, 1):
        for buffer in (generic, fast):
            buffer.extend(transitions(n, start, dtype))
        start += n
        assert len(fast) == len(generic)
        assert fast._writer._cursor == generic._writer._cursor
        assert fast.write_count == generic.write_count
        torch.testing.assert_close(fast[:], generic[:])
    assert fast._fast_path()
    if kind == "memmap":
        for key, entry in fast.storage._storage.items(True, True):
            on_disk = MemoryMappedTensor.from_filename(entry.filename, entry.dtype, entry.shape)
            torch.testing.assert_close(on_disk, generic.storage._storage[key], msg=str(key))
    for seed in range(3):
        samples = []
        for buffer in (generic, fast):
            torch.manual_seed(seed)
            samples.append(buffer.sample())
        torch.testing.assert_close(samples[1], samples[0])
        assert samples[1].batch_size == (4,)
        assert samples[1].device == samples[0].device == fast.storage.device


def test_replay_fast_path_casts_and_reshapes_what_it_writes_like_torch():
    """Transitions of another dtype or shape than the stored ones (float64 into float32 storage, a flat reward) are
    written by torch (numpy copies only the stored dtype and shape): stored cast and reshaped."""
    wide = transitions(3, 1, torch.float64) / 3
    flat = transitions(2, 4)
    flat["next", "reward"] = flat["next", "reward"].reshape(2)
    expected, fast = make_replay_buffer(7, 4), make_replay_buffer(7, 4)
    for buffer, batches in (
        (expected, (wide.apply(lambda value: value.float()), transitions(2, 4))),
        (fast, (wide, flat)),
    ):
        buffer.extend(transitions(1, 0))
        for batch in batches:
            buffer.extend(batch)
    torch.testing.assert_close(fast[:], expected[:], rtol=0, atol=0)


def test_sample_batches_draws_the_batches_of_successive_samples():
    """sample_batches(3) is [3, batch_size] and holds, under the same seed, exactly the three batches that three
    sample() calls return; a sampler whose batches depend on the previous ones is refused."""
    buffer = make_replay_buffer(50, 4)
    buffer.extend(transitions(30, 0))
    torch.manual_seed(1)
    successive = torch.stack([buffer.sample() for _ in range(3)])
    torch.manual_seed(1)
    together = buffer.sample_batches(3)
    assert together.batch_size == (3, 4)
    torch.testing.assert_close(together, successive, rtol=0, atol=0)
    with pytest.raises(ValueError, match="count >= 1"):
        buffer.sample_batches(0)
    without_replacement = CrossQReplayBuffer(
        storage=LazyTensorStorage(50), sampler=SamplerWithoutReplacement(), batch_size=4
    )
    without_replacement.extend(transitions(30, 0))
    assert not without_replacement.can_sample_batches
    with pytest.raises(ValueError, match="uniform sampling"):
        without_replacement.sample_batches(2)


def test_a_collector_leaves_the_actors_brn_statistics_alone():
    """The actor straight from make_crossq_actor acts in eval mode: TorchRL's Collector running it leaves the BRN
    running statistics (and step counts) as they were; CrossQLoss's actor pass still trains them."""
    env = make_env("Pendulum-v1", seed=0)
    actor = make_crossq_actor(env, net_arch=[8])
    assert not any(module.training for module in actor.modules())
    before = {name: buffer.clone() for name, buffer in actor.named_buffers()}
    collector = Collector(env, actor, frames_per_batch=16, total_frames=64, auto_register_policy_transforms=False)
    for _ in collector:
        pass
    collector.shutdown()
    for name, buffer in actor.named_buffers():
        torch.testing.assert_close(buffer, before[name], msg=f"{name} moved during collection")

    loss = CrossQLoss(actor, make_crossq_critic(env, net_arch=[8]))
    loss.make_value_estimator(gamma=0.99)
    loss(env.rollout(8))
    moved = {name for name, buffer in actor.named_buffers() if not torch.equal(buffer, before[name])}
    assert moved == set(before)  # the loss's train-mode actor pass updated every statistic and step count
    assert not any(module.training for module in actor.modules())  # and gave the actor its eval mode back


def test_lean_env_refuses_a_matrix_action():
    """LeanGymEnv takes vector actions only; a (2, 2) Box is refused with the shape and the fix."""
    env = gym.make("Pendulum-v1")
    env.action_space = gym.spaces.Box(-2.0, 2.0, (2, 2))
    with pytest.raises(ValueError, match=r"action shape \(2, 2\)\. Flatten it to \(4,\)"):
        LeanGymEnv(env)


@pytest.mark.parametrize("with_policy", [False, True], ids=["random", "policy"])
@pytest.mark.parametrize("env_id", ["InvertedPendulum-v5", "Pendulum-v1"])
def test_buffered_rollout_gives_the_steps_of_the_step_loop(env_id, with_policy):
    """buffered_rollout against step_and_maybe_reset with rand_action (the random phase's chunks) or with the acting
    policy plus action noise (which restarts on is_init): the same batch entry by entry (episode ends, is_init marks
    and episode statistics included) and the same carrier, over chunks of several lengths."""
    results = []
    for buffered in (False, True):
        env = LeanGymEnv(gym.make(env_id), mark_episode_start=True)
        env.set_seed(5)
        torch.manual_seed(0)
        policy = None
        if with_policy:
            actor = make_crossq_actor(env, net_arch=[8])
            noise = OrnsteinUhlenbeckActionNoise(torch.zeros(1), 0.5 * torch.ones(1))
            policy = TensorDictSequential(ActingPolicy(actor), AdditiveActionNoise(noise, env.action_spec))
        carrier, batches = env.reset(), []
        for length in (70, 1, 130):
            if buffered:
                batch, carrier = env.buffered_rollout(carrier, length, policy)
                batches.append(batch.clone())
            else:
                steps = []
                for _ in range(length):
                    acted = env.rand_action(carrier) if policy is None else policy(carrier)
                    step, carrier = env.step_and_maybe_reset(acted)
                    steps.append(step.clone())
                batches.append(torch.stack(steps))
        results.append((torch.cat(batches), carrier))
    (want, want_carrier), (ours, our_carrier) = results
    assert want.get(("next", "done")).any() or env_id == "Pendulum-v1"
    assert set(ours.keys(True, True)) == set(want.keys(True, True))
    for key in want.keys(True, True):
        torch.testing.assert_close(ours.get(key), want.get(key), rtol=0, atol=0, msg=str(key))
    torch.testing.assert_close(our_carrier.select(*want_carrier.keys()), want_carrier, rtol=0, atol=0)


def test_buffered_rollout_tells_env_errors_from_policy_errors():
    """An env that raises mid-chunk: EnvStepError with the steps completed before it and the env's error as cause;
    a policy that raises: its own error, untouched."""
    env = LeanGymEnv(gym.make("Pendulum-v1"))
    step, calls = env._env.step, []

    def failing_step(action):
        calls.append(action)
        if len(calls) == 5:
            raise RuntimeError("simulator exploded")
        return step(action)

    env._env.step = failing_step
    with pytest.raises(EnvStepError, match=r"env\.step raised RuntimeError: simulator exploded") as error:
        env.buffered_rollout(env.reset(), 10)
    assert error.value.completed == 4 and isinstance(error.value.__cause__, RuntimeError)

    def broken_policy(step):
        raise KeyError("no such entry")

    with pytest.raises(KeyError, match="no such entry"):
        env.buffered_rollout(env.reset(), 3, broken_policy)
