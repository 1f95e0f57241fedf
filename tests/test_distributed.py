"""Distributed collection and sweeps (crossq_trl.distributed): 2 Ray workers on a local Ray, tiny networks.

One Ray session for the module (starting Ray takes seconds). The learning comparison with local collection is a
benchmark (benchmarks/distributed.py, results in benchmarks/results/distributed/); here: the training run is the
one the schedule says, its workers are seeded apart, weights reach them, a killed worker stops the run with a
checkpoint, and the run resumes from it.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from crossq_trl import ActingPolicy, CrossQ, CrossQConfig, EnvStepError, make_crossq_actor
from crossq_trl.cli import build_parser, config_kwargs
from crossq_trl.distributed import PolicyWeightPush, collectors, make_distributed_collector, run_jobs
from crossq_trl.training.checkpoint import load_checkpoint

WORKERS = 2
BATCH = 16  # env steps per collected batch: train_freq 8 on each of the 2 workers
LEARNING_STARTS, KILL_AT, TOTAL = 64, 160, 240
OPTIONS = dict(
    net_arch=[32, 32],
    batch_size=64,
    learning_starts=LEARNING_STARTS,
    train_freq=BATCH // WORKERS,
    gradient_steps=-1,  # one update per env step collected, as with 16 local envs
    policy_delay=2,
    compile=False,
    collector_workers=WORKERS,
    seed=0,
)


@pytest.fixture(scope="module")
def local_ray():
    """The ray module, with a local Ray session of 2 CPUs; the tests that need it are skipped without Ray."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'crossq-trl[ray]'")
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def remote_policy_state(model: CrossQ) -> list[dict[str, torch.Tensor]]:
    return [policy.state_dict() for policy in model.collector.get_distant_attr("policy")]


def test_config_refuses_what_workers_cannot_do():
    with pytest.raises(ValueError, match="does not support use_sde"):
        CrossQConfig(collector_workers=2, use_sde=True)
    with pytest.raises(ValueError, match="does not support n_envs > 1, action_noise"):
        CrossQConfig(collector_workers=2, n_envs=2, action_noise="normal_0.1")
    with pytest.raises(ValueError, match="ray_address needs collector_workers >= 1"):
        CrossQConfig(ray_address="auto")
    with pytest.raises(ValueError, match="collector_backend must be 'ray' or 'multiprocess'"):
        CrossQConfig(collector_workers=2, collector_backend="slurm")
    args = build_parser().parse_args(["train", "--collector-workers", "3", "--ray-address", "10.0.0.1:6379"])
    config = CrossQConfig(**config_kwargs(args))
    assert (config.collector_workers, config.ray_address, config.collector_backend) == (3, "10.0.0.1:6379", "ray")


def test_ray_backend_without_ray_names_the_extra(monkeypatch, observation_spec, action_spec):
    monkeypatch.setattr(collectors, "ray_available", lambda: False)
    policy = ActingPolicy(make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec))
    with pytest.raises(ImportError, match=r"pip install 'crossq-trl\[ray\]'"):
        make_distributed_collector("Pendulum-v1", policy, backend="ray")


def test_weight_push_interval_and_learner_copy(observation_spec, action_spec):
    """Every `interval` updates, counted after each batch; a learner whose collector holds a copy of its policy
    (a GPU learner's CPU copy) has its weights, BRN statistics included, copied into it before each push."""
    learner = ActingPolicy(make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec))
    copy = ActingPolicy(make_crossq_actor(observation_spec=observation_spec, action_spec=action_spec))
    received = []

    def send() -> None:
        received.append({key: value.clone() for key, value in copy.state_dict().items()})

    collector = SimpleNamespace(policy=copy, update_policy_weights_=send)
    snapshots = {}
    trainer = SimpleNamespace(update=SimpleNamespace(num_updates=0), register_op=lambda *args: None)
    push = PolicyWeightPush(collector, interval=3, source=learner)
    push.register(trainer)
    push._setup()
    for updates in (2, 3, 4, 6, 7):  # the update count after successive batches
        with torch.no_grad():
            for value in learner.state_dict().values():
                if value.is_floating_point():
                    value.add_(1.0)
        trainer.update.num_updates = updates
        snapshots[updates] = {key: value.clone() for key, value in learner.state_dict().items()}
        push()
    assert push.pushes == len(received) == 3 and push.pushed_at == 6  # at 0, 3 and 6
    for key, value in snapshots[6].items():
        assert torch.equal(received[-1][key], value), key
        assert not torch.equal(received[-2][key], value) or not value.is_floating_point(), key
    assert any("running_mean" in key for key in learner.state_dict())


def test_ray_run_pushes_weights_stops_on_a_killed_worker_and_resumes(local_ray, tmp_path):
    """A short run on 2 workers (one test, to start workers only twice): the schedule's update count, distinct
    worker seeds, the workers acting with the weights (BRN running statistics included) of the last push rather
    than their initial ones; a worker killed mid-run stops training with EnvStepError and a checkpoint of that
    step, from which the run resumes on new workers to its end."""
    checkpoint = tmp_path / "checkpoint.pt"
    model = CrossQ("MlpPolicy", "Pendulum-v1", **OPTIONS)
    seen = {}

    def check_then_kill(model: CrossQ) -> None:
        if model.num_timesteps == KILL_AT - 2 * BATCH:
            seen["old"] = remote_policy_state(model)[0]
        if model.num_timesteps == KILL_AT - BATCH:  # the push after this batch sends these weights
            seen["sent"] = {key: value.clone() for key, value in model.collector.policy.state_dict().items()}
        if model.num_timesteps == KILL_AT:
            seen["remote"] = remote_policy_state(model)
            local_ray.kill(model.collector.remote_collectors[0])

    with pytest.raises(EnvStepError, match=r"(?s)ray collector worker failed .*killed by `ray.kill`") as failure:
        model.learn(TOTAL, callback=check_then_kill, checkpoint_path=checkpoint, checkpoint_interval=10_000)
    assert "checkpoint written to" in "".join(failure.value.__notes__)

    # gradient_steps=-1: one update per env step, from the batch that reaches learning_starts on (as locally)
    updates_at_kill = KILL_AT - LEARNING_STARTS + BATCH
    assert model.update.num_updates == updates_at_kill
    # once at the start, then after each batch's updates, but for the one after the kill (the error came from it)
    assert model.weight_push.pushes == 1 + updates_at_kill // BATCH - 1
    for remote in seen["remote"]:
        assert remote.keys() == seen["sent"].keys()
        for key, value in seen["sent"].items():
            torch.testing.assert_close(remote[key], value, rtol=0, atol=0, msg=key)
    moved = [key for key in seen["sent"] if not torch.equal(seen["sent"][key], seen["old"][key])]
    assert any("running_mean" in key for key in moved) and any("weight" in key for key in moved)
    # the two workers' envs (seeds 0 and 1) start different episodes; the buffer is time-major, worker by worker
    first = model.replay_buffer[:2]["observation"]
    assert not torch.equal(first[0], first[1])

    state = load_checkpoint(checkpoint)
    assert state["num_timesteps"] == KILL_AT and state["counters"]["optim_count"] == updates_at_kill
    assert state["replay_buffer"]["transitions"].shape[0] == KILL_AT
    resumed = CrossQ.resume(checkpoint)
    assert resumed.num_timesteps == TOTAL and resumed.update.num_updates == TOTAL - LEARNING_STARTS + BATCH
    assert len(resumed.replay_buffer) == TOTAL
    assert load_checkpoint(checkpoint)["num_timesteps"] == TOTAL


def test_sweep_jobs_run_as_ray_tasks(local_ray):
    outcomes = {job: (result, error) for job, result, error in run_jobs(math.factorial, [5, -1], backend="ray")}
    assert outcomes[5] == (120, None)
    assert outcomes[-1][0] is None and "factorial() not defined for negative values" in str(outcomes[-1][1])
