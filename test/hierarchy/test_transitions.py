"""The hierarchy's semi-MDP transitions equal a pure-Python reference of the control flow."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrl.collectors import Collector
from torchrl.data import Bounded
from torchrl.envs import TransformedEnv

from helpers import EchoLevel, ScriptedEnv, assert_same_transitions, echo_action, reference_transitions, scripted_reward
from torchrl_layered import Hierarchy


def scripted_stream(instance: int, schedule, num_steps: int):
    """The env stream of one instance of `ScriptedEnv`, recomputed without TorchRL."""
    stream, g, episode, step = [], 0, 0, 0
    obs = torch.tensor([instance, g, episode], dtype=torch.float32)
    for _ in range(num_steps):
        g += 1
        step += 1
        length, terminated = schedule[episode % len(schedule)]
        end = step >= length
        reward = float(scripted_reward(torch.tensor(instance), torch.tensor(g)))
        next_obs = torch.tensor([instance, g, episode], dtype=torch.float32)
        stream.append((obs, reward, next_obs, end and terminated, end and not terminated))
        if end:
            episode, step = episode + 1, 0
            obs = torch.tensor([instance, g, episode], dtype=torch.float32)
        else:
            obs = next_obs
    return stream


def make_hierarchy(env, intervals):
    levels = [
        EchoLevel(k, control_interval=ci, input_spec=Bounded(-1.0, 1.0, shape=(k,)) if k else None)
        for k, ci in enumerate(intervals)
    ]
    return Hierarchy(levels, env=env)


def as_rows(transitions, has_input: bool):
    def tup(x):
        return tuple(float(v) for v in x.reshape(-1))

    rows = []
    for j in range(transitions.shape[0]):
        t = transitions[j]
        rows.append((
            tup(t["observation"]),
            tup(t["level_input"]) if has_input else None,
            tup(t["action"]),
            (float(t["next", "reward"]),),
            (int(t["next", "duration"]),),
            tup(t["next", "observation"]),
            (bool(t["next", "terminated"]),),
            (bool(t["next", "truncated"]),),
        ))
    return rows


def reference_rows(row):
    start, level_input, action, reward, duration, end, term, trunc = row

    def tup(x):
        return tuple(float(v) for v in x.reshape(-1))

    return (tup(start), tup(level_input) if level_input is not None else None, tup(action), (reward,),
            (duration,), tup(end), (bool(term),), (bool(trunc),))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_transitions_match_reference_for_any_depth_intervals_and_episode_ends(data):
    num_levels = data.draw(st.integers(1, 4), label="levels")
    intervals = [data.draw(st.one_of(st.none(), st.integers(1, 4))) for _ in range(num_levels)]
    num_envs = data.draw(st.integers(1, 8), label="envs")
    schedules = [
        data.draw(st.lists(st.tuples(st.integers(1, 12), st.booleans()), min_size=1, max_size=4))
        for _ in range(num_envs)
    ]
    steps_per_batch = data.draw(st.integers(1, 10), label="T")
    num_batches = data.draw(st.integers(1, 4), label="batches")
    discrete = data.draw(st.sampled_from([None, 3]))

    env = ScriptedEnv(schedules, discrete=discrete)
    hierarchy = make_hierarchy(env, intervals)
    collector = Collector(
        TransformedEnv(env, hierarchy.make_transform()),
        hierarchy,
        frames_per_batch=num_envs * steps_per_batch,
        total_frames=num_envs * steps_per_batch * num_batches,
    )
    got = [[] for _ in range(num_levels)]
    for b, batch in enumerate(collector):
        for k, trans in enumerate(hierarchy.transitions(batch)):
            ends = trans["next", "observation"][:, 1]
            # an option appears in the batch where it ends, never earlier or later
            assert bool(((ends > b * steps_per_batch) & (ends <= (b + 1) * steps_per_batch)).all())
            got[k] += as_rows(trans, k > 0)
    collector.shutdown()

    specs = hierarchy.action_specs

    def act(k, obs, level_input):
        li = None if level_input is None else level_input.unsqueeze(0)
        return echo_action(k, obs.unsqueeze(0), li, specs[k])[0]

    expected = [[] for _ in range(num_levels)]
    for i in range(num_envs):
        per_level = reference_transitions(scripted_stream(i, schedules[i], steps_per_batch * num_batches), intervals, act)
        for k in range(num_levels):
            expected[k] += [reference_rows(r) for r in per_level[k]]
    for k in range(num_levels):
        # equal as multisets: nothing lost, nothing duplicated, every field right
        assert_same_transitions(got[k], expected[k], f"level {k}")


def test_terminal_transition_ends_on_the_true_last_observation():
    env = ScriptedEnv([[(3, True)], [(5, False)]])
    hierarchy = make_hierarchy(env, [None, 2])
    collector = Collector(TransformedEnv(env, hierarchy.make_transform()), hierarchy, frames_per_batch=16,
                          total_frames=16)
    batch = next(iter(collector))
    collector.shutdown()
    for trans in hierarchy.transitions(batch):
        final = trans[trans["next", "done"].squeeze(-1)]
        assert final.shape[0] > 0
        # the end observation belongs to the episode that ended (same episode index as its start)
        assert torch.equal(final["next", "observation"][:, 2], final["observation"][:, 2])
    # and it is not the first observation of the next episode
    done = batch["next", "done"].squeeze(-1)
    first_of_next = batch["observation"][:, 1:][done[:, :-1]]
    assert not torch.equal(batch["next", "observation"][:, :-1][done[:, :-1]], first_of_next)


def test_partial_reset_restarts_only_the_ending_instance():
    long = [(100, False)]
    env = ScriptedEnv([[(3, True), (100, False)], long, long])
    hierarchy = make_hierarchy(env, [None, 3, 2])
    collector = Collector(TransformedEnv(env, hierarchy.make_transform()), hierarchy, frames_per_batch=3 * 8,
                          total_frames=3 * 8)
    batch = next(iter(collector))
    collector.shutdown()
    t = 3  # instance 0 ended after step index 2: it restarts clean at index 3
    acting, steps = batch["levels", "acting"], batch["levels", "steps"]
    # all levels act, with empty step counts (steps counts own actions before this one)
    assert acting[0, t].tolist() == [True] * 3 and steps[0, t].tolist() == [0, 0, 0]
    # the others keep their options: the top acts every 3 x 2 steps, level 1 every 2 steps
    assert acting[1:, :, 0].int().tolist() == [[1, 0, 0, 0, 0, 0, 1, 0]] * 2
    assert acting[1:, :, 1].int().tolist() == [[1, 0, 1, 0, 1, 0, 1, 0]] * 2
    assert steps[1:, t, 1].tolist() == [2, 2]  # level 1 acted at t=0 and t=2


def test_option_index_counts_each_levels_options_per_episode():
    env = ScriptedEnv([[(6, True)], [(100, False)]])
    hierarchy = make_hierarchy(env, [None, 2])
    collector = Collector(TransformedEnv(env, hierarchy.make_transform()), hierarchy, frames_per_batch=2 * 8,
                          total_frames=2 * 8)
    batch = next(iter(collector))
    collector.shutdown()
    top, low = hierarchy.transitions(batch)
    # instance 0: two episodes of 6 steps -> low options 0..5, 0,1 ; top options (2 steps each) 0,1,2, 0
    low0 = low[low["observation"][:, 0] == 0]
    assert low0["option_index"].tolist() == [0, 1, 2, 3, 4, 5, 0, 1]
    top0 = top[top["observation"][:, 0] == 0]
    assert top0["option_index"].tolist() == [0, 1, 2, 0]
    # the collector's episode ids come along, one per episode
    assert low0["collector", "traj_ids"].unique().numel() == 2


def test_keys_remapped_after_building_move_acting_and_transitions_together():
    """`Hierarchy.transitions` and the transform read each level's ``tensor_keys``: one source of truth."""
    envs = [ScriptedEnv([[(7, True)], [(9, False)]]) for _ in range(2)]
    reference = make_hierarchy(envs[0], [None, 3, 2])
    remapped = make_hierarchy(envs[1], [None, 3, 2])
    top, middle, low = remapped.levels
    top.set_keys(action=("options", "top"), start_observation=("options", "top_start"))
    middle.set_keys(level_input=("options", "top"), action=("options", "middle"),
                    start_observation=("options", "middle_start"))
    low.set_keys(level_input=("options", "middle"))
    batches = []
    for env, hierarchy in zip(envs, (reference, remapped)):
        collector = Collector(TransformedEnv(env, hierarchy.make_transform()), hierarchy, frames_per_batch=24,
                              total_frames=24)
        batches.append(next(iter(collector)))
        collector.shutdown()
    old, new = batches
    assert ("options", "top") in new.keys(True) and ("levels", "0", "action") not in new.keys(True)
    for k, (expected, got) in enumerate(zip(reference.transitions(old), remapped.transitions(new))):
        assert as_rows(got, k > 0) == as_rows(expected, k > 0)
        assert got.shape[0] > 0


def test_the_transform_refuses_level_keys_of_another_depth():
    from torchrl_layered.hierarchy.transform import HierarchyTransform

    hierarchy = make_hierarchy(ScriptedEnv([[(5, True)]]), [None, 2])
    with pytest.raises(ValueError, match="HierarchyTransform got 1 level_keys for 2 levels"):
        HierarchyTransform(hierarchy.action_specs[:-1], hierarchy.observation_specs[:-1],
                           level_keys=[hierarchy.levels[0].tensor_keys])


def test_transition_comparison_ignores_order_and_summation_noise_but_not_differences():
    rows_a = [((0.0249, 1.0), None), ((0.0306, 0.0281), (1.0,)), ((0.0309, 0.0296), (1.0,))]
    # the same rows reordered, each value moved across a rounding boundary by less than the tolerance
    rows_b = [((0.0310, 0.0297), (1.0,)), ((0.0251, 1.0), None), ((0.0305, 0.0282), (1.0,))]
    assert_same_transitions(rows_a, rows_b, "same")
    with pytest.raises(AssertionError, match="no transition matches"):
        assert_same_transitions(rows_a, [rows_b[0], rows_b[1], ((0.0305, 0.0382), (1.0,))], "differs")
    with pytest.raises(AssertionError, match="no transition matches"):
        assert_same_transitions(rows_a, [rows_b[0], ((0.0251, 1.0), (0.0,)), rows_b[2]], "input differs")
