"""Prioritized replay (torch-tensor priority trees, importance-weighted critic loss, priorities from the compiled
update) and the memory-optimized storage (each observation once, exact at episode ends), alone and in the facade."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch._dynamo
from tensordict import TensorDict
from test_update import BATCH, POLICY_DELAY, assert_relative_close, make_loss, make_update
from torch._dynamo.utils import counters
from torchrl.data import (
    PrioritizedSampler,
    RandomSampler,
    TensorDictPrioritizedReplayBuffer,
    TensorDictReplayBuffer,
)

from crossq_trl import CrossQ
from crossq_trl.cli import build_parser, config_kwargs
from crossq_trl.replay import (
    HerReplayBuffer,
    MemoryOptimizedStorage,
    MinSegmentTree,
    SumSegmentTree,
    TensorPrioritizedSampler,
    build_replay_buffer,
)
from crossq_trl.training.replay_buffer import CrossQReplayBuffer, load_replay_buffer_state, replay_buffer_state

ALPHA, BETA, EPS = 0.7, 0.5, 1e-6
TINY = {"net_arch": [16, 16], "batch_size": 32, "compile": False, "learning_starts": 40, "seed": 0}


# --- priority trees and the sampler -----------------------------------------------------------------------------


def test_segment_trees_match_direct_computation():
    values = torch.rand(13, dtype=torch.float64)
    sums, mins = SumSegmentTree(13), MinSegmentTree(13)
    sums[torch.arange(13)] = values
    mins[torch.arange(13)] = values
    assert sums.query(0, 13) == pytest.approx(values.sum().item())
    assert sums.query(3, 9) == pytest.approx(values[3:9].sum().item())
    assert mins.query(2, 11) == values[2:11].min().item()
    mass = torch.rand(500, dtype=torch.float64) * values.sum()
    assert torch.equal(sums.scan_lower_bound(mass), torch.searchsorted(values.cumsum(0), mass))
    sums[torch.tensor([4, 4])] = torch.tensor([2.0, 5.0])  # a repeated index keeps its last value
    assert sums[torch.tensor([4])].item() == 5.0
    assert sums.query(0, 13) == pytest.approx(values.sum().item() - values[4].item() + 5.0)


# --- the importance-weighted loss and the priorities of the update ----------------------------------------------


@pytest.fixture
def loss(observation_spec, action_spec):
    return make_loss(observation_spec, action_spec)


def test_weighted_critic_loss_is_the_weighted_mean_of_the_per_transition_losses(loss, make_batch):
    """With ``priority_weight`` in the batch the critic loss is sum(w l) / sum(w) over the per-transition losses
    l (TorchRL's weighted mean); without it, or with use_prioritized_weights=False, the plain mean."""
    batch = make_batch(8)
    weights = torch.tensor([1.0, 0.5, 0.25, 1.0, 0.8, 0.1, 0.6, 0.3])
    weighted_batch = batch.clone().set("priority_weight", weights)

    def critic_loss(td, **settings):  # each on a copy: the joint pass moves the BRN statistics
        copied = copy.deepcopy(loss)
        for name, value in settings.items():
            setattr(copied, name, value)
        torch.manual_seed(7)
        return copied.qvalue_loss(td.clone())[0]

    per_transition = critic_loss(batch, reduction="none")
    assert per_transition.shape == (8,)
    weighted = critic_loss(weighted_batch, reduction="mean")
    want = (weights * per_transition).sum() / weights.sum()
    torch.testing.assert_close(weighted, want)
    assert not torch.allclose(weighted, per_transition.mean())
    torch.testing.assert_close(critic_loss(batch), per_transition.mean())
    torch.testing.assert_close(critic_loss(weighted_batch, use_prioritized_weights=False), per_transition.mean())


def test_compiled_update_with_weights_matches_eager_in_two_graphs(loss, make_batch):
    """Weighted batches: the compiled update gives the eager metrics, parameters and per-transition priorities
    (written into the batch at the loss's priority key), the eager critic loss's |TD error| before the step,
    in two graphs without breaks that never recompile."""
    eager_loss, compiled_loss = loss, copy.deepcopy(loss)
    eager, compiled = make_update(eager_loss, compile=False), make_update(compiled_loss, compile=True)
    counters.clear()
    for step in range(POLICY_DELAY + 2):
        batch = make_batch(BATCH).set("priority_weight", torch.rand(BATCH) + 0.1)
        reference = copy.deepcopy(eager_loss)
        torch.manual_seed(100 + step)
        want_priority = reference.qvalue_loss(batch.clone())[1]["td_error"]
        batches = []
        for update in (eager, compiled):
            torch.manual_seed(100 + step)
            batches.append(batch.clone())
            metrics = update(batches[-1])
        torch.testing.assert_close(batches[0]["td_error"], want_priority, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(batches[1]["td_error"], want_priority, rtol=1e-4, atol=1e-5)
        assert metrics["loss_qvalue"].shape == ()
        if step == POLICY_DELAY:
            assert counters["stats"]["unique_graphs"] == 2
            assert not counters["graph_break"], dict(counters["graph_break"])
            torch._dynamo.config.error_on_recompile = True
    torch._dynamo.config.error_on_recompile = False
    assert counters["stats"]["unique_graphs"] == 2
    for name, want in eager_loss.state_dict().items():
        assert_relative_close(compiled_loss.state_dict()[name], want, name)


def test_priorities_after_an_update_are_the_td_errors(loss, make_batch):
    """A prioritized buffer: after an update, the sampled transitions' tree leaves are (|TD error| + eps)^alpha
    (eager |TD error| of the critic loss before the step), and the next batch's importance weights are
    (P(i) / min_j P(j))^-beta."""
    replay_buffer = build_replay_buffer(
        PrioritizedSampler, {"alpha": ALPHA, "beta": BETA, "eps": EPS}, buffer_size=64, batch_size=BATCH
    )
    sampler = replay_buffer._sampler
    assert isinstance(sampler, TensorPrioritizedSampler) and isinstance(replay_buffer, CrossQReplayBuffer)
    replay_buffer.extend(make_batch(40))
    leaves = sampler._sum_tree[torch.arange(40)]
    torch.testing.assert_close(leaves, torch.full_like(leaves, (1 + EPS) ** ALPHA))  # the default priority, 1
    batch = replay_buffer.sample()
    assert torch.equal(batch["priority_weight"], torch.ones(BATCH))
    reference = copy.deepcopy(loss)
    torch.manual_seed(3)
    td_error = reference.qvalue_loss(batch.clone())[1]["td_error"]
    update = make_update(loss, compile=False)
    torch.manual_seed(3)
    update(batch)
    replay_buffer.update_tensordict_priority(batch)
    last = {int(i): k for k, i in enumerate(batch["index"])}  # a repeated index keeps its last priority
    index = torch.tensor(list(last))
    want = (td_error[list(last.values())].double() + EPS) ** ALPHA
    torch.testing.assert_close(sampler._sum_tree[index].double(), want, rtol=1e-5, atol=0)
    leaves = sampler._sum_tree[torch.arange(40)].double()
    assert (leaves[index] != leaves[~torch.isin(torch.arange(40), index)][0]).all()
    np.random.seed(0)
    following = replay_buffer.sample()
    want_weights = (leaves[following["index"]] / leaves.min()) ** -BETA
    torch.testing.assert_close(following["priority_weight"].double(), want_weights, rtol=1e-5, atol=0)


# --- build_replay_buffer ----------------------------------------------------------------------------------------


class MyReplayBuffer(TensorDictReplayBuffer):
    pass


def test_build_replay_buffer_dispatch():
    sizes = {"buffer_size": 30, "batch_size": 4}
    plain = build_replay_buffer(**sizes)
    assert type(plain) is CrossQReplayBuffer and type(plain._sampler) is RandomSampler
    per = build_replay_buffer(TensorDictPrioritizedReplayBuffer, {"alpha": 0.5, "beta": 0.3}, **sizes)
    assert isinstance(per._sampler, TensorPrioritizedSampler) and (per._sampler.alpha, per._sampler.beta) == (0.5, 0.3)
    custom = build_replay_buffer(MyReplayBuffer, {"priority_key": "p"}, **sizes)
    assert type(custom) is MyReplayBuffer and custom.priority_key == "p"
    compact = build_replay_buffer(optimize_memory_usage=True, n_envs=4, **sizes)
    assert isinstance(compact._storage, MemoryOptimizedStorage) and compact._storage.max_size == 28
    errors = [
        ({"replay_buffer_class": dict}, TypeError, "neither a Sampler nor a replay buffer"),
        ({"replay_buffer_class": "PrioritizedSampler"}, TypeError, "must be a class"),
        ({"replay_buffer_class": PrioritizedSampler, "replay_buffer_kwargs": {"alpha": 1}}, TypeError, "beta"),
        ({"replay_buffer_kwargs": {"handle_timeout_termination": True}}, ValueError, "need a replay_buffer_class"),
        (
            {"replay_buffer_class": PrioritizedSampler, "replay_buffer_kwargs": {"alpha": 1, "beta": 1}, "n_steps": 3},
            ValueError,
            "n_steps > 1",
        ),
        ({"optimize_memory_usage": True, "storage": "memmap"}, ValueError, "storage='memory'"),
    ]
    for kwargs, error, match in errors:
        with pytest.raises(error, match=match):
            build_replay_buffer(**{**sizes, **kwargs})


# --- the memory-optimized storage -------------------------------------------------------------------------------


def rollout(steps: int, n_envs: int, obs_dim: int = 3) -> TensorDict:
    """Time-major transitions of ``n_envs`` envs whose episodes end (terminated or truncated) at random: the
    next observation of an episode's last step is not the following step's observation."""
    generator = torch.Generator().manual_seed(n_envs)
    observation, steps_out = torch.randn(n_envs, obs_dim, generator=generator), []
    for _ in range(steps):
        following = torch.randn(n_envs, obs_dim, generator=generator)
        done = torch.rand(n_envs, 1, generator=generator) < 0.2
        terminated = done & (torch.rand(n_envs, 1, generator=generator) < 0.5)
        steps_out.append(
            TensorDict(
                {
                    "observation": observation,
                    "action": torch.randn(n_envs, 2, generator=generator),
                    ("next", "observation"): following,
                    ("next", "reward"): torch.randn(n_envs, 1, generator=generator),
                    ("next", "done"): done,
                    ("next", "terminated"): terminated,
                },
                [n_envs],
            )
        )
        observation = torch.where(done, torch.randn(n_envs, obs_dim, generator=generator), following)
    return torch.stack(steps_out).reshape(-1)


@pytest.mark.parametrize("n_envs", [1, 3])
def test_memory_optimized_buffer_samples_the_plain_buffers_transitions(n_envs):
    """Filled with the same rollout (episode ends, n_envs, the circular wrap), both buffers sample the same
    transitions at the same indices, every key equal, while the optimized one stores no next observations
    apart from those of episode ends and of the newest step."""
    capacity = 12 * n_envs
    plain = build_replay_buffer(buffer_size=capacity, batch_size=64)
    compact = build_replay_buffer(buffer_size=capacity, batch_size=64, optimize_memory_usage=True, n_envs=n_envs)
    for round_, chunk in enumerate(rollout(40, n_envs).split(5 * n_envs)):  # wraps about three times
        plain.extend(chunk.clone())
        compact.extend(chunk.clone())
        samples = []
        for replay_buffer in (plain, compact):
            torch.manual_seed(round_)
            samples.append(replay_buffer.sample())
        assert set(samples[0].keys(True, True)) == set(samples[1].keys(True, True))
        for key, want in samples[0].items(True, True):
            assert torch.equal(samples[1][key], want), (key, round_)
    everything = plain[:]
    assert torch.equal(compact[:]["next", "observation"], everything["next", "observation"])
    assert everything["next", "done"].any()
    storage = compact._storage
    pooled = (storage._spare_row >= 0).sum().item()
    assert pooled <= everything["next", "done"].sum() + n_envs  # episode ends and the newest step only
    assert ("next", "observation") not in storage._storage.keys(True, True)


def test_which_buffers_draw_the_batches_of_several_updates_together(recwarn):
    """The plain, n-step and memory-optimized buffers draw several batches in one sample (the last through TorchRL's
    generic path, without its warning about another batch size), each batch what successive sample() calls return;
    HER (which relabels a share of each batch) and prioritized sampling draw batch by batch."""
    sizes = {"buffer_size": 40, "batch_size": 8}
    drawing = {
        "plain": build_replay_buffer(**sizes),
        "n-step": build_replay_buffer(**sizes, n_steps=3),
        "memory-optimized": build_replay_buffer(**sizes, optimize_memory_usage=True),
    }
    for name, replay_buffer in drawing.items():
        replay_buffer.extend(rollout(30, 1))
        assert replay_buffer.can_sample_batches, name
        torch.manual_seed(0)
        successive = torch.stack([replay_buffer.sample() for _ in range(3)])
        torch.manual_seed(0)
        together = replay_buffer.sample_batches(3)
        assert together.batch_size == (3, 8), name
        assert torch.equal(together["observation"], successive["observation"]), name
        assert torch.equal(together["next", "observation"], successive["next", "observation"]), name
    assert not [w for w in recwarn if "conflicting batch_sizes" in str(w.message)]
    her = build_replay_buffer(HerReplayBuffer, buffer_size=40, batch_size=8)
    prioritized = build_replay_buffer(PrioritizedSampler, {"alpha": 0.6, "beta": 0.4}, **sizes)
    assert not her.can_sample_batches and not prioritized.can_sample_batches


def test_memory_optimized_buffer_round_trips_through_its_state():
    """The replay-buffer checkpoint (slots and write cursor) and the storage's state_dict give back the same
    transitions, and the buffers keep matching the plain one after more writes."""
    data = rollout(30, 2)
    compact = build_replay_buffer(buffer_size=20, batch_size=8, optimize_memory_usage=True, n_envs=2)
    plain = build_replay_buffer(buffer_size=20, batch_size=8)
    for replay_buffer in (compact, plain):
        replay_buffer.extend(data[:46].clone())
    restored = build_replay_buffer(buffer_size=20, batch_size=8, optimize_memory_usage=True, n_envs=2)
    load_replay_buffer_state(restored, replay_buffer_state(compact))
    copied = MemoryOptimizedStorage(20, stride=2)
    copied.load_state_dict(compact._storage.state_dict())
    for replay_buffer in (compact, restored, plain):
        replay_buffer.extend(data[46:].clone())
    copied.set(torch.arange(46, 60) % 20, data[46:].clone())
    for other in (compact[:], restored[:], copied.get(slice(None))):
        for key, want in plain[:].items(True, True):
            assert torch.equal(other[key], want), key


# --- the facade, config and command line ------------------------------------------------------------------------


def test_facade_trains_with_prioritized_replay_and_optimized_memory_and_keeps_both(tmp_path):
    """A short run with TorchRL's PrioritizedSampler and optimize_memory_usage: the priorities moved away from
    the default, the storage holds each observation once, and both the replay-buffer file and the training
    checkpoint bring back the priorities and the transitions."""
    model = CrossQ(
        "MlpPolicy",
        "Pendulum-v1",
        replay_buffer_class=PrioritizedSampler,
        replay_buffer_kwargs={"alpha": ALPHA, "beta": BETA},
        optimize_memory_usage=True,
        buffer_size=100,
        **TINY,
    )
    model.learn(120, checkpoint_path=tmp_path / "checkpoint.pt")  # the buffer wraps
    assert isinstance(model.replay_buffer._storage, MemoryOptimizedStorage)
    leaves = model.replay_buffer._sampler._sum_tree[torch.arange(100)]
    assert leaves.unique().numel() > 30  # updated priorities, not the default one
    model.save_replay_buffer(tmp_path / "buffer.pt")
    other = CrossQ(
        "MlpPolicy",
        "Pendulum-v1",
        prioritized_replay=True,
        prioritized_replay_alpha=ALPHA,
        optimize_memory_usage=True,
        buffer_size=100,
        **TINY,
    )
    other.load_replay_buffer(tmp_path / "buffer.pt")
    resumed = CrossQ.resume(tmp_path / "checkpoint.pt")  # already at its total: loads without training
    assert resumed.replay_buffer_class is PrioritizedSampler
    for restored in (other, resumed):
        assert isinstance(restored.replay_buffer._storage, MemoryOptimizedStorage)
        tree = restored.replay_buffer._sampler._sum_tree
        assert torch.equal(tree.values, model.replay_buffer._sampler._sum_tree.values)
        for key, want in model.replay_buffer[:].items(True, True):
            assert torch.equal(restored.replay_buffer[:][key], want), key


def test_command_line_flags_for_replay():
    args = build_parser().parse_args(
        ["train", "--prioritized-replay", "--prioritized-replay-alpha", "0.5", "--optimize-memory-usage"]
    )
    assert args.prioritized_replay and args.prioritized_replay_alpha == 0.5 and args.optimize_memory_usage
    assert "prioritized_replay" not in config_kwargs(build_parser().parse_args(["train"]))
