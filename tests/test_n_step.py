"""n-step targets: the replay buffer's n-step sampling against a hand computation, the loss's gamma^k bootstrap,
the compiled update on n-step batches, and the option through the facade and the command line."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from tensordict import TensorDict
from torch._dynamo.utils import counters

from crossq_trl import CrossQ, make_replay_buffer
from crossq_trl.cli import build_parser
from tests.test_update import BATCH, POLICY_DELAY, assert_same_metrics_side_by_side, make_loss, make_update

GAMMA, N_STEPS, N_ENVS, T = 0.9, 3, 2, 7


def transitions(done_at: dict, terminated_at: set) -> TensorDict:
    """``T`` steps of ``N_ENVS`` envs, time-major; observation ``100 * env + t``, reward ``t + 10 * env``;
    ``done_at``/``terminated_at`` hold ``(env, t)`` of episode ends (terminations)."""
    env, t = torch.arange(N_ENVS).repeat(T), torch.arange(T).repeat_interleave(N_ENVS)
    done = torch.tensor([(e, s) in done_at for e, s in zip(env.tolist(), t.tolist(), strict=True)])
    terminated = torch.tensor([(e, s) in terminated_at for e, s in zip(env.tolist(), t.tolist(), strict=True)])
    obs = (100 * env + t).float().unsqueeze(-1)
    return TensorDict(
        {
            "observation": obs,
            "action": obs.clone(),
            ("next", "observation"): obs + 1,
            ("next", "reward"): (t + 10 * env).float().unsqueeze(-1),
            ("next", "done"): done.unsqueeze(-1),
            ("next", "terminated"): terminated.unsqueeze(-1),
        },
        [N_ENVS * T],
    )


def hand_n_step(data: TensorDict, i: int, newest: int) -> tuple[float, float, bool, int]:
    """sb3's rule, one transition at a time: (reward sum, next observation, terminated, steps)."""
    total, k = 0.0, 0
    while True:
        j = i + k * N_ENVS
        total += GAMMA**k * data["next", "reward"][j].item()
        if data["next", "done"][j].item() or k == N_STEPS - 1 or j + N_ENVS > newest:
            return total, data["next", "observation"][j].item(), bool(data["next", "terminated"][j]), k + 1
        k += 1


def test_n_step_sample_equals_the_hand_computed_targets():
    """Each sampled transition: up to 3 discounted rewards of its own env, cut after a termination (env 0, t=2) or
    a truncation (env 1, t=4), and at the newest transition; the next entries and steps of its last step."""
    data = transitions(done_at={(0, 2), (1, 4)}, terminated_at={(0, 2)})
    buffer = make_replay_buffer(100, 64, n_steps=N_STEPS, gamma=GAMMA, n_envs=N_ENVS)
    buffer.extend(data)
    torch.manual_seed(0)
    batch = buffer.sample()
    assert set(batch["index"].tolist()) == set(range(N_ENVS * T))  # every case is covered
    for row, i in enumerate(batch["index"].tolist()):
        reward, next_obs, terminated, steps = hand_n_step(data, i, newest=N_ENVS * T - 1)
        assert batch["observation"][row].item() == data["observation"][i].item()
        assert batch["next", "reward"][row].item() == pytest.approx(reward)
        assert batch["next", "observation"][row].item() == next_obs
        assert bool(batch["next", "terminated"][row]) == terminated
        assert batch["steps_to_next_obs"][row].item() == steps
    # spot checks of the rule itself: a full window, a termination inside it, a truncation kept as bootstrap
    assert hand_n_step(data, 0, 13) == (0 + 0.9 * 1 + 0.81 * 2, 3.0, True, 3)
    assert hand_n_step(data, 2 * N_ENVS + 1, 13) == pytest.approx((12 + 0.9 * 13 + 0.81 * 14, 105.0, False, 3))
    assert hand_n_step(data, 3 * N_ENVS + 1, 13) == pytest.approx((13 + 0.9 * 14, 105.0, False, 2))


def test_n_step_sample_ignores_the_unwritten_slots_of_a_buffer_not_yet_full():
    """Windows that reach past the newest transition read slots never written (uninitialised memory): NaN there
    leaves the sampled rewards those of the hand computation."""
    data = transitions(done_at={(0, 2), (1, 4)}, terminated_at={(0, 2)})
    buffer = make_replay_buffer(100, 64, n_steps=N_STEPS, gamma=GAMMA, n_envs=N_ENVS)
    buffer.extend(data)
    buffer.storage._storage.get(("next", "reward"))[N_ENVS * T :] = float("nan")
    torch.manual_seed(0)
    batch = buffer.sample()
    assert batch["index"].max().item() >= N_ENVS * (T - 1)  # some windows reach past the newest transition
    for row, i in enumerate(batch["index"].tolist()):
        reward, *_ = hand_n_step(data, i, newest=N_ENVS * T - 1)
        assert batch["next", "reward"][row].item() == pytest.approx(reward)


def test_n_steps_1_samples_the_one_step_transitions():
    """n_steps=1 draws the same indices as an n-step buffer and returns the stored transitions unchanged."""
    data = transitions(done_at={(0, 2)}, terminated_at={(0, 2)})
    one, three = (make_replay_buffer(100, 32, n_steps=n, gamma=GAMMA, n_envs=N_ENVS) for n in (1, 3))
    for buffer in (one, three):
        buffer.extend(data)
    torch.manual_seed(1)
    sample = one.sample()
    torch.manual_seed(1)
    assert torch.equal(three.sample()["index"], sample["index"])
    torch.testing.assert_close(sample.exclude("index"), data[sample["index"]], rtol=0, atol=0)
    assert sample.get("steps_to_next_obs", None) is None


def test_loss_bootstraps_with_gamma_to_the_steps(observation_spec, action_spec, make_batch):
    """A batch with steps_to_next_obs = 3 gets the target of a one-step batch under gamma^3."""
    batch = make_batch(6)
    n_step_batch = batch.clone()
    n_step_batch["steps_to_next_obs"] = torch.full((6, 1), 3)
    losses = [make_loss(observation_spec, action_spec) for _ in range(2)]
    losses[1].load_state_dict(losses[0].state_dict())
    losses[1].make_value_estimator(gamma=0.99**3)
    td_errors = []
    for loss, data in zip(losses, (n_step_batch, batch), strict=True):
        torch.manual_seed(5)
        td_errors.append(loss.qvalue_loss(data)[1]["td_error"])
    torch.testing.assert_close(td_errors[0], td_errors[1])
    torch.manual_seed(5)
    assert not torch.allclose(losses[0].qvalue_loss(batch)[1]["td_error"], td_errors[0])


def test_compiled_update_on_n_step_batches_matches_eager_without_recompiling(observation_spec, action_spec, make_batch):
    """n-step batches (steps_to_next_obs from 1 to 3) go into the same two graphs, which match the eager update and
    never recompile."""

    def make_n_step_batch(size):
        batch = make_batch(size)
        batch["steps_to_next_obs"] = torch.randint(1, 4, (size, 1))
        return batch

    loss = make_loss(observation_spec, action_spec)
    eager, compiled = make_update(loss, compile=False), make_update(copy.deepcopy(loss), compile=True)
    counters.clear()
    assert_same_metrics_side_by_side(eager, compiled, make_n_step_batch)
    assert counters["stats"]["unique_graphs"] == 2
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(POLICY_DELAY):
            compiled(make_n_step_batch(BATCH))


def test_n_steps_through_the_facade_and_the_command_line():
    """n_steps reaches the replay buffer (with the env count and gamma) and learn runs on n-step batches."""
    model = CrossQ("MlpPolicy", "Pendulum-v1", n_steps=3, gamma=0.95, learning_starts=50, net_arch=[16], compile=False)
    assert (model.replay_buffer.n_steps, model.replay_buffer.gamma, model.replay_buffer.n_envs) == (3, 0.95, 1)
    model.learn(80)
    assert model.replay_buffer.sample().get("steps_to_next_obs").shape == (model.replay_buffer._batch_size, 1)
    assert model.update._batch_keys[-1] == "steps_to_next_obs"
    assert build_parser().parse_args(["train", "--n-steps", "3"]).n_steps == 3
