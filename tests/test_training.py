"""The training loop: CrossQTrainer built by hand from TorchRL parts, the update schedule (train_freq,
gradient_steps, policy_delay, learning_starts), multi-env collection, the evaluation hook and CSV logging."""

from __future__ import annotations

import itertools

import gymnasium as gym
import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.envs import ParallelEnv

from crossq_trl import (
    CrossQ,
    CrossQLoss,
    CrossQTrainer,
    CrossQUpdate,
    make_crossq_actor,
    make_crossq_critic,
    make_crossq_optimizers,
    make_env,
    make_replay_buffer,
)
from crossq_trl.training import UpdateSchedule

TINY = {"net_arch": [32, 32], "batch_size": 32, "compile": False}


def short_pendulum(max_episode_steps: int):
    return lambda: gym.make("Pendulum-v1", max_episode_steps=max_episode_steps)


def build_trainer(
    *,
    total_frames: int,
    learning_starts: int,
    frames_per_batch: int = 1,
    policy_delay: int = 2,
    train_freq=(1, "step"),
    gradient_steps: int = 1,
    env_source="Pendulum-v1",
):
    """A CrossQTrainer assembled from the TorchRL parts, as a user of the components would."""
    env = make_env(env_source, seed=0)
    actor = make_crossq_actor(env, net_arch=[32, 32]).eval()
    critic = make_crossq_critic(env, net_arch=[32, 32])
    loss = CrossQLoss(actor, critic)
    loss.make_value_estimator(gamma=0.99)
    update = CrossQUpdate(loss, make_crossq_optimizers(loss), policy_delay=policy_delay, compile=False)
    replay_buffer = make_replay_buffer(10_000, 32)
    collector = Collector(
        env,
        actor,
        frames_per_batch=frames_per_batch,
        total_frames=total_frames,
        init_random_frames=learning_starts,
        auto_register_policy_transforms=False,
    )
    trainer = CrossQTrainer(
        collector=collector,
        total_frames=total_frames,
        update=update,
        replay_buffer=replay_buffer,
        train_freq=train_freq,
        gradient_steps=gradient_steps,
    )
    return trainer, actor, critic, loss, update, replay_buffer


def record_updates(trainer):
    """After every collected batch: (frames collected, updates done, actor updates done, episodes ended)."""
    history = []

    def hook():
        history.append(
            (
                trainer.collected_frames,
                trainer.update.num_updates,
                trainer.update.num_actor_updates,
                trainer.episodes.num_episodes,
            )
        )

    trainer.register_op("post_steps", hook)
    return history


def adam_steps(optimizer) -> set[int]:
    """The distinct Adam step counters of an optimizer's parameters (one value when all stepped together)."""
    return {int(state["step"]) for state in optimizer.state.values()}


def test_hand_built_trainer_end_to_end():
    trainer, actor, critic, loss, update, replay_buffer = build_trainer(total_frames=240, learning_starts=100)
    history = record_updates(trainer)
    critic_before = {k: v.clone() for k, v in critic.state_dict().items()}
    actor_before = {k: v.clone() for k, v in actor.state_dict().items()}
    log_alpha_before = loss.log_alpha.detach().clone()

    trainer.train()

    assert trainer.collected_frames == 240
    assert len(replay_buffer) == 240
    # the first update runs with the batch that completes learning_starts, then one per step
    assert update.num_updates == 240 - 100 + 1
    assert update.num_actor_updates == update.num_updates // 2
    assert all(updates == 0 for frames, updates, _, _ in history if frames < 100)
    assert trainer.episodes.num_episodes == 1  # Pendulum episodes are 200 steps
    assert trainer.episodes.summary()["rollout/ep_len_mean"] == 200
    # every network moved, the temperature too, and the metrics are finite
    for before, module in ((critic_before, critic), (actor_before, actor)):
        after = module.state_dict()
        changed = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
        assert changed, "no weight changed"
    assert not torch.equal(loss.log_alpha.detach(), log_alpha_before)
    metrics = trainer.last_metrics
    for key in ("loss_qvalue", "loss_actor", "loss_alpha", "alpha", "entropy"):
        assert torch.isfinite(metrics[key]).all(), key
    report = trainer.report()
    assert report["time/total_timesteps"] == 240 and report["train/n_updates"] == 141
    # the acting actor is still in eval mode (BRN on running statistics)
    assert not actor.training


def test_policy_delay_counts_actor_and_critic_steps():
    trainer, _, _, _, update, _ = build_trainer(total_frames=60, learning_starts=10, policy_delay=3)
    trainer.train()
    assert update.num_updates == 51
    assert update.num_actor_updates == 51 // 3
    assert adam_steps(update.optimizers.critic) == {51}
    assert adam_steps(update.optimizers.actor) == {51 // 3}
    assert adam_steps(update.optimizers.alpha) == {51 // 3}


def test_policy_delay_on_the_update_itself():
    env = make_env("Pendulum-v1", seed=0)
    actor = make_crossq_actor(env, net_arch=[16]).eval()
    critic = make_crossq_critic(env, net_arch=[16])
    loss = CrossQLoss(actor, critic)
    update = CrossQUpdate(loss, make_crossq_optimizers(loss), policy_delay=4, compile=False)
    batch = env.rollout(8, break_when_any_done=False).reshape(-1)  # random actions, 8 transitions
    actor_weights = [p.detach().clone() for p in actor.parameters()]
    for i in range(1, 10):
        metrics = update(batch)
        assert update.num_updates == i and update.num_actor_updates == i // 4
        # actor metrics appear exactly on the actor steps
        assert ("loss_actor" in metrics) == (i % 4 == 0)
        actor_now = [p.detach() for p in actor.parameters()]
        moved = any(not torch.equal(a, b) for a, b in zip(actor_weights, actor_now, strict=True))
        assert moved == (i >= 4), f"actor moved={moved} after {i} updates"


def test_learning_starts_random_actions_then_policy():
    """Before learning_starts, actions are uniform random; after, they come from the (saturated) actor."""
    trainer, actor, _, _, update, replay_buffer = build_trainer(total_frames=150, learning_starts=100)
    history = record_updates(trainer)
    net = actor.module[0].module  # GaussianActorNet
    with torch.no_grad():  # an actor whose every action is the upper bound
        net.mean.weight.zero_()
        net.mean.bias.fill_(50.0)
        net.log_std.weight.zero_()
        net.log_std.bias.fill_(-20.0)
    trainer.train()

    actions = replay_buffer[:]["action"].squeeze(-1)
    random_part, policy_part = actions[:100], actions[100:]
    assert random_part.min() >= -2.0 and random_part.max() <= 2.0
    assert random_part.std() > 0.8  # uniform on [-2, 2] has std 1.15
    assert (random_part < 0).sum() > 25 and (random_part > 1.9).sum() < 10
    assert torch.allclose(policy_part, torch.full_like(policy_part, 2.0), atol=1e-3)
    assert [updates for frames, updates, _, _ in history if frames < 100] == [0] * 99
    assert update.num_updates == 51


def test_gradient_steps_minus_one_with_train_freq_4():
    trainer, _, _, _, update, replay_buffer = build_trainer(
        total_frames=48, learning_starts=8, frames_per_batch=4, train_freq=(4, "step"), gradient_steps=-1
    )
    history = record_updates(trainer)
    trainer.train()
    assert [frames for frames, *_ in history] == list(range(4, 49, 4))
    updates = [u for _, u, _, _ in history]
    assert updates[:1] == [0]  # 4 random frames, nothing due yet
    assert [b - a for a, b in itertools.pairwise(updates[1:])] == [4] * 10
    assert update.num_updates == 48 - 4 and len(replay_buffer) == 48


def test_fixed_gradient_steps_per_train_freq():
    trainer, *_ = build_trainer(
        total_frames=24, learning_starts=0, frames_per_batch=4, train_freq=(4, "step"), gradient_steps=3
    )
    history = record_updates(trainer)
    trainer.train()
    assert [u for _, u, _, _ in history] == [3, 6, 9, 12, 15, 18]


def test_updates_due_together_get_batches_drawn_together():
    """With 3 updates due per train_freq and at most 2 batches per draw, the trainer draws sample_batches(2) then
    sample_batches(1) and gives each update one of those batches, in order; never a sample() of its own."""
    trainer, _, _, _, update, replay_buffer = build_trainer(
        total_frames=12, learning_starts=0, frames_per_batch=4, train_freq=(4, "step"), gradient_steps=3
    )
    replay_buffer.max_batches_per_draw = 2
    draws, sizes, given = [], [], []
    sample, sample_batches, step = replay_buffer.sample, replay_buffer.sample_batches, update.step
    replay_buffer.sample = lambda batch_size=None, **kwargs: sizes.append(batch_size) or sample(batch_size, **kwargs)
    replay_buffer.sample_batches = lambda count: draws.append(sample_batches(count)) or draws[-1]
    update.step = lambda trainer, batch: given.append(batch.clone()) or step(trainer, batch)
    trainer.train()
    assert sizes == [2 * 32, 1 * 32] * 3  # the draws of sample_batches, no sample() of the buffer's batch_size
    assert [draw.batch_size for draw in draws] == [torch.Size([2, 32]), torch.Size([1, 32])] * 3
    drawn = [batch for draw in draws for batch in draw.unbind(0)]
    assert len(given) == len(drawn) == 9
    for batch, expected in zip(given, drawn, strict=True):
        torch.testing.assert_close(batch, expected, rtol=0, atol=0)


@pytest.mark.parametrize(("gradient_steps", "per_episode"), [(-1, 50), (3, 3)])
def test_episodic_train_freq_updates_only_when_episodes_end(gradient_steps, per_episode):
    """train_freq=(1, "episode") on 50-step Pendulum episodes: updates only after each episode ends."""
    model = CrossQ(
        "MlpPolicy",
        short_pendulum(50),
        learning_starts=0,
        train_freq=(1, "episode"),
        gradient_steps=gradient_steps,
        seed=0,
        **TINY,
    )
    seen = []
    model.learn(150, callback=lambda m: seen.append((m.trainer.collected_frames, m.update.num_updates)))
    assert model.trainer.episodes.num_episodes == 3
    assert model.update.num_updates == 3 * per_episode
    for frames, updates in seen:  # the count only moves at episode ends
        assert updates == (frames // 50) * per_episode, (frames, updates)


def test_update_schedule_counts_episodes_and_frames():
    def batch(n_frames: int, n_done: int) -> TensorDict:
        done = torch.zeros(n_frames, 1, dtype=torch.bool)
        done[:n_done] = True
        return TensorDict({("next", "done"): done}, [n_frames])

    per_two_episodes = UpdateSchedule((2, "episode"), gradient_steps=-1)
    assert per_two_episodes.updates_due(batch(5, 1)) == 0
    assert per_two_episodes.updates_due(batch(3, 0)) == 0
    assert per_two_episodes.state_dict() == {"frames": 8, "episodes": 1}
    assert per_two_episodes.updates_due(batch(4, 1)) == 12  # every step since the last updates
    assert per_two_episodes.updates_due(batch(2, 2)) == 2
    resumed = UpdateSchedule((2, "episode"), gradient_steps=5)
    resumed.load_state_dict({"frames": 3, "episodes": 1})
    assert resumed.updates_due(batch(1, 1)) == 5
    assert resumed.state_dict() == {"frames": 0, "episodes": 0}
    steps = UpdateSchedule((4, "step"), gradient_steps=2)
    assert [steps.updates_due(batch(4, 0)) for _ in range(3)] == [2, 2, 2]


def test_multi_env_run_collects_into_the_replay_buffer():
    model = CrossQ("MlpPolicy", "Pendulum-v1", n_envs=2, learning_starts=10, seed=0, **TINY)
    assert isinstance(model.env, ParallelEnv) and tuple(model.env.batch_size) == (2,)
    model.learn(40)
    assert model.num_timesteps == 40 and model.trainer.collected_frames == 40
    assert len(model.replay_buffer) == 40
    data = model.replay_buffer[:]
    # each collected batch [2 envs, 1 step] is stored flat: env 0, env 1, env 0, env 1, ...
    obs, next_obs = data["observation"], data[("next", "observation")]
    assert torch.equal(obs[2:], next_obs[:-2])  # every stored transition continues its own env's trajectory
    assert not torch.equal(obs[0::2], obs[1::2])  # two different envs
    assert not data[("next", "done")].any()
    assert model.update.num_updates == (40 - 10) // 2 + 1  # one update per batch of 2 frames from learning_starts


def test_eval_hook_logs_eval_mean_reward_to_csv(tmp_path):
    model = CrossQ(
        "MlpPolicy",
        "Pendulum-v1",
        learning_starts=50,
        seed=0,
        eval_freq=100,
        n_eval_episodes=1,
        logger="csv",
        log_dir=str(tmp_path),
        **TINY,
    )
    model.learn(200, log_interval=1)
    result = model.trainer.evaluation.last_result
    assert set(result) == {"eval/mean_reward", "eval/std_reward", "eval/mean_ep_length"}
    assert result["eval/mean_ep_length"] == 200 and -3000 < result["eval/mean_reward"] < 0
    assert model.trainer.report()["eval/mean_reward"] == result["eval/mean_reward"]
    scalars = tmp_path / "CrossQ" / "scalars"
    rows = (scalars / "eval" / "mean_reward.csv").read_text().split()
    assert [row.split(",")[0] for row in rows] == ["100", "200"]  # evaluated at 100 and 200 frames
    assert float(rows[-1].split(",")[1]) == pytest.approx(result["eval/mean_reward"])
    # the periodic report (every episode here) went to CSV files too
    for name in ("rollout/ep_rew_mean", "train/loss_qvalue", "train/alpha", "time/total_timesteps"):
        assert (scalars / f"{name}.csv").is_file(), name
    assert (scalars / "rollout" / "ep_len_mean.csv").read_text().split() == ["200,200.0"]


def test_eval_freq_needs_an_eval_env_when_env_is_not_an_id():
    model = CrossQ("MlpPolicy", short_pendulum(50), eval_freq=10, **TINY)
    with pytest.raises(ValueError, match="eval_env"):
        model.learn(10)


def test_linear_learning_rate_schedule_reaches_the_optimizers():
    model = CrossQ("MlpPolicy", "Pendulum-v1", learning_rate="lin_0.001", learning_starts=10, seed=0, **TINY)
    seen = []

    def record(m):
        rates = [group["lr"] for opt in m.update.optimizers.all().values() for group in opt.param_groups]
        seen.append((m.trainer.collected_frames, rates))

    model.learn(40, callback=record)
    assert len(seen) == 40
    for frames, rates in seen:
        # set before the updates of each batch from the progress left after collecting it; none before learning_starts
        expected = 0.001 * (1 - frames / 40) if frames >= 10 else 0.001
        assert len(rates) == 3 and rates == pytest.approx([expected] * 3), (frames, rates)


def test_episode_statistics_window():
    model = CrossQ("MlpPolicy", short_pendulum(20), learning_starts=1000, stats_window_size=2, seed=0, **TINY)
    model.learn(100)  # 5 episodes of random actions
    episodes = model.trainer.episodes
    assert episodes.num_episodes == 5
    returns = model.replay_buffer[:][("next", "reward")].reshape(5, 20).sum(1)
    summary = episodes.summary()
    assert summary["rollout/ep_len_mean"] == 20
    assert summary["rollout/ep_rew_mean"] == pytest.approx(returns[-2:].mean().item(), rel=1e-5)
    assert model.update.num_updates == 0
