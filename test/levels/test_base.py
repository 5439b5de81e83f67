"""The custom-level hooks of `Level`: acting, hand-back, rewards, storing, learning, state."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import (
    Bounded, Composite, LazyTensorStorage, SamplerWithoutReplacement, TensorDictReplayBuffer, Unbounded,
)
from torchrl.envs import GymEnv

from torchrl_layered import Hierarchy, Level, RandomLevel
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env


class GoalLevel(Level):
    """Picks a target angle; hands control back when the pendulum's cos is high; rewards progress."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stored = []
        self.learn_calls = 0

    def get_action(self, td):
        return torch.full((td.shape[0], *self.action_spec.shape), 0.5)

    def is_done(self, td):
        return td["observation"][:, :1] > 0.9

    def get_reward(self, transitions):
        return -transitions["next", "duration"].float()

    def extend(self, transitions):
        self.stored.append(transitions)

    def learn(self):
        self.learn_calls += 1
        return {"calls": float(self.learn_calls)}


def test_custom_level_hooks_through_a_hierarchy():
    env = make_env("Pendulum-v1", 2)
    top = GoalLevel()
    low = GoalLevel(input_spec=Bounded(-1.0, 1.0, shape=(1,)))
    hierarchy = Hierarchy([RandomLevel(), top, low][1:], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=40, total_frames=80)
    for batch in collector:
        hierarchy.extend(batch)
        metrics = hierarchy.learn()
    collector.shutdown()
    assert metrics == {"level0/calls": 2.0, "level1/calls": 2.0}
    stored = torch.cat(low.stored)
    assert stored.shape[0] == 80 and low.n_transitions == 80
    # get_reward replaced the summed env reward
    assert torch.equal(stored["next", "reward"], -stored["next", "duration"].float())
    # is_done runs on the acting rows: the top's option ended exactly where the low level saw cos > 0.9
    handed_back = int((stored["observation"][:, 0] > 0.9).sum())
    assert top.n_transitions == sum(t.shape[0] for t in top.stored) == handed_back


def test_eval_mode_stores_nothing():
    env = make_env("Pendulum-v1", 2)
    level = GoalLevel()
    hierarchy = Hierarchy([level], env=env)
    hierarchy.eval()
    collector = make_collector(env, hierarchy, frames_per_batch=20, total_frames=20)
    for batch in collector:
        hierarchy.extend(batch)
        assert hierarchy.learn() == {}
    collector.shutdown()
    assert level.stored == [] and level.n_transitions == 0 and level.learn_calls == 0


def test_level_is_a_plain_torchrl_policy_without_a_hierarchy():
    env = GymEnv("Pendulum-v1")
    level = RandomLevel()
    level.initialize(env.observation_spec_unbatched["observation"], env.action_spec_unbatched)
    rollout = env.rollout(10, level)
    assert rollout.shape == (10,) and rollout["action"].abs().max() <= 2.0


def test_counters_round_trip_through_state_dict():
    env = make_env("Pendulum-v1", 1)
    level = GoalLevel()
    hierarchy = Hierarchy([level], env=env)
    level.n_transitions = 123
    state = hierarchy.state_dict()
    other = GoalLevel()
    Hierarchy([other], env=env).load_state_dict(state)
    assert other.n_transitions == 123


class CountingLevel(Level):
    """Carries a per-instance count of its own actions in its level state."""

    def get_state_spec(self):
        return Composite(count=Unbounded((1,), dtype=torch.long))

    def get_action(self, td):
        td["state", "count"] = td["state", "count"] + 1
        return td["state", "count"].float().clamp(max=2.0)


def test_level_state_is_carried_per_instance_and_zeroed_at_episode_start():
    from helpers import ScriptedEnv

    env = ScriptedEnv([[(4, True)], [(100, False)]])
    top = CountingLevel()
    low = RandomLevel(input_spec=Bounded(0.0, 2.0, shape=(1,)), control_interval=2)
    hierarchy = Hierarchy([top, low], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=2 * 8, total_frames=16)
    batch = next(iter(collector))
    collector.shutdown()
    count = batch["levels", "0", "state", "count"][..., 0]
    # instance 0: episodes of 4 steps, the top acts every 2 steps -> count 1,1,2,2 then restarts
    assert count[0].tolist() == [1, 1, 2, 2, 1, 1, 2, 2]
    # instance 1: one long episode, the count keeps growing
    assert count[1].tolist() == [1, 1, 2, 2, 3, 3, 4, 4]


class LearningLevel(Level):
    """A custom level that learns with the base class's plumbing: buffer, schedule, named optimiser."""

    def __init__(self, learning_steps=None, **kwargs):
        super().__init__(**kwargs)
        self.set_update_schedule(warm_up_steps=30, update_interval=2, num_updates=3, learning_steps=learning_steps)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def initialize(self, observation_spec, action_spec, parent=None):
        super().initialize(observation_spec, action_spec, parent)
        self.replay_buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(1000), batch_size=4)
        self.optimizer = torch.optim.Adam([self.weight], lr=0.1)

    def get_action(self, td):
        return self.action_spec.rand(td.shape)

    def extend(self, transitions):
        self.store(transitions.select("observation", "action", "next"))

    def learn(self):
        num = self.updates_due(ready=len(self.replay_buffer) >= 4)
        for _ in range(num):
            loss = (self.weight - self.sample_buffer()["next", "reward"].mean()).pow(2).sum()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return {"updates": float(num)} if num else {}

    def named_optimizers(self):
        return {"adam": self.optimizer}


def test_a_custom_level_learns_on_the_base_class_schedule_and_its_optimiser_state_round_trips():
    env = make_env("Pendulum-v1", 2)
    level = LearningLevel()
    hierarchy = Hierarchy([level], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=20, total_frames=60)
    due = []
    for batch in collector:
        hierarchy.extend(batch)
        due.append(hierarchy.learn().get("level0/updates", 0.0))
    collector.shutdown()
    # 20 env steps per batch: the first is warm-up (not owed later), then 3 updates per 2 transitions
    assert due == [0.0, 30.0, 30.0] and level.num_gradient_updates == 60 and level.schedule.learned == 60
    state = hierarchy.state_dict()
    other = LearningLevel()
    Hierarchy([other], env=env).load_state_dict(state)
    assert other.num_gradient_updates == 60 and other.schedule.learned == 60
    assert int(other.optimizer.state_dict()["state"][0]["step"]) == 60
    # a checkpoint written before the optimisers were grouped by name still restores them
    legacy = {"num_model_updates": 7, "learned_transitions": 8, "adam": level.optimizer.state_dict()}
    fresh = LearningLevel()
    Hierarchy([fresh], env=env)
    fresh.set_extra_state(legacy)
    assert fresh.num_gradient_updates == 7 and int(fresh.optimizer.state_dict()["state"][0]["step"]) == 60


def test_a_level_stops_learning_once_its_transitions_cover_learning_steps_and_goes_on_acting():
    env = make_env("Pendulum-v1", 2)
    level = LearningLevel(learning_steps=50)
    hierarchy = Hierarchy([level], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=20, total_frames=100)
    due, stored = [], []
    for batch in collector:
        hierarchy.extend(batch)
        due.append(hierarchy.learn().get("level0/updates", 0.0))
        stored.append(len(level.replay_buffer))
    collector.shutdown()
    # warm-up until 30 env steps, updates at 40, none from 60 on (>= 50): the level still acts and stores
    assert due == [0.0, 30.0, 0.0, 0.0, 0.0] and level.num_gradient_updates == 30
    assert stored == [20, 40, 60, 80, 100] and level.learning_done
    # the clock is the stored env steps, so a restored level knows it is done
    other = LearningLevel(learning_steps=50)
    Hierarchy([other], env=env).load_state_dict(hierarchy.state_dict())
    assert other.learning_done and other.updates_due() == 0


@pytest.mark.parametrize("refresh", [True, False])
def test_a_parent_empties_its_buffer_once_when_its_child_stops_learning_where_it_asks_to(refresh):
    env = make_env("Pendulum-v1", 2)
    child = LearningLevel(learning_steps=50, input_spec=Bounded(-1.0, 1.0, shape=(2,)), control_interval=5)
    parent = LearningLevel(refresh_when_child_freezes=refresh)
    hierarchy = Hierarchy([parent, child], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=20, total_frames=100)
    stored = []
    for batch in collector:
        hierarchy.extend(batch)
        stored.append((len(parent.replay_buffer), parent.env_steps, child.learning_done))
    collector.shutdown()
    # 20 env steps a batch = 4 options of 5 steps on 2 instances; the child is done at 60 (>= 50)
    if refresh:
        # emptied in the batch where the child froze, then filled again; its clock keeps counting
        assert stored == [(4, 20, False), (8, 40, False), (0, 60, True), (4, 80, True), (8, 100, True)]
    else:
        assert stored == [(4, 20, False), (8, 40, False), (12, 60, True), (16, 80, True), (20, 100, True)]


@pytest.mark.parametrize("bad", ["no", 1, None])
def test_refresh_when_child_freezes_must_be_a_bool(bad):
    with pytest.raises(TypeError, match="refresh_when_child_freezes must be a bool"):
        LearningLevel(refresh_when_child_freezes=bad)


@pytest.mark.parametrize("bad", [10, 2.5, True])
def test_learning_steps_must_be_an_int_not_below_the_warm_up(bad):
    with pytest.raises(ValueError, match=r"needs an int learning_steps >= 30 \(its warm_up_steps\) or None"):
        LearningLevel(learning_steps=bad)


def test_the_learning_plumbing_refuses_what_it_cannot_use():
    level = RandomLevel()
    with pytest.raises(RuntimeError, match="RandomLevel has no replay buffer"):
        level.sample_buffer()
    assert level.updates_due() == 0 and level.named_optimizers() == {}
    with pytest.raises(ValueError, match=r"RandomLevel needs an int update_interval >= 1; got 0"):
        level.set_update_schedule(warm_up_steps=0, update_interval=0, num_updates=1)


def filled_buffer(sampler=None, batch_size=4, n=50) -> TensorDictReplayBuffer:
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(100), batch_size=batch_size,
                                    **({"sampler": sampler} if sampler is not None else {}))
    buffer.extend(TensorDict({"item": torch.arange(n)}, [n]))
    return buffer


def test_a_round_of_batches_is_drawn_at_once_from_a_uniform_buffer_with_the_same_law_as_sample():
    level = RandomLevel()
    level.replay_buffer = filled_buffer()
    level.replay_buffer.sample = lambda *args, **kwargs: pytest.fail("drawn batch by batch")
    torch.manual_seed(0)
    batches = list(level.sample_batches(2000))
    assert len(batches) == 2000 and all(b.batch_size == torch.Size([4]) for b in batches)
    assert set(batches[0].keys()) == set(filled_buffer().sample().keys())  # the entries `sample` gives
    assert all(torch.equal(b["index"], b["item"]) for b in batches[:20])  # "index": the row's place in the storage
    items = torch.cat([b["item"] for b in batches])
    assert int(items.min()) == 0 and int(items.max()) == 49  # every stored item, nothing else
    counts = torch.bincount(items, minlength=50).float()
    assert float(counts.std() / counts.mean()) < 0.15  # uniform: 160 draws per item, sd ~ 0.08 of the mean
    torch.manual_seed(0)
    again = torch.cat([b["item"] for b in level.sample_batches(2000)])
    assert torch.equal(items, again)  # the global seed (or the storage's generator) fixes the draw
    reads = []
    storage_get = level.replay_buffer.storage.get
    level.replay_buffer.storage.get = lambda index: reads.append(index.numel()) or storage_get(index)
    assert len(list(level.sample_batches(150, group=64))) == 150
    assert reads == [64 * 4, 64 * 4, 22 * 4]  # a bounded group of batches per storage read


def test_any_other_buffer_is_asked_batch_by_batch():
    level = RandomLevel()
    level.replay_buffer = filled_buffer(SamplerWithoutReplacement(), batch_size=10)
    items = torch.cat([b["item"] for b in level.sample_batches(5)])
    assert sorted(items.tolist()) == list(range(50))  # one epoch without replacement: each item once
    level.replay_buffer = filled_buffer()
    level.replay_buffer.append_transform(lambda td: td.set("item", td["item"] + 1000))
    assert all(bool((b["item"] >= 1000).all()) for b in level.sample_batches(3))  # the transform is applied


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_a_round_of_batches_refuses_a_group_that_is_not_a_positive_int_at_the_call(bad):
    level = RandomLevel()
    level.replay_buffer = filled_buffer()
    with pytest.raises(ValueError, match=r"RandomLevel.sample_batches needs an int group >= 1"):
        level.sample_batches(3, group=bad)  # refused at the call, before any batch is asked for


@pytest.mark.parametrize("bad", [-1, 3.0, False, None])
def test_a_round_of_batches_refuses_a_count_that_is_not_a_non_negative_int(bad):
    level = RandomLevel()
    level.replay_buffer = filled_buffer()
    with pytest.raises(ValueError, match=r"RandomLevel.sample_batches needs an int num >= 0"):
        level.sample_batches(bad)
    assert list(level.sample_batches(0)) == []  # an empty round draws nothing


def test_a_round_of_batches_without_a_buffer_is_refused_at_the_call():
    with pytest.raises(RuntimeError, match="has no replay buffer"):
        RandomLevel().sample_batches(3)
