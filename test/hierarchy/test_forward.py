"""The hierarchy's forward pass: only levels that some instance hands control to are run."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded
from torchrl.envs import TransformedEnv

from torchrl_layered import Hierarchy, RandomLevel
from torchrl_layered.envs import make_env
from torchrl_layered.keys import ACTING, level_key, stacked_key
from torchrl_layered.unchecked import unchecked_tensordict


class Counting(RandomLevel):
    """A random level that counts the rows it is asked to act for."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rows_asked = []

    def get_action(self, tensordict):
        self.rows_asked.append(tensordict.shape[0])
        return super().get_action(tensordict)


def test_a_level_acts_only_at_the_steps_where_an_instance_hands_it_control():
    env = make_env("Pendulum-v1", 3)
    top, low = Counting(), Counting(input_spec=Bounded(-1.0, 1.0, shape=(2,)), control_interval=4)
    hierarchy = Hierarchy([top, low], env=env)
    layered = TransformedEnv(env, hierarchy.make_transform())
    td = layered.reset()
    held = []
    for _ in range(12):
        td = hierarchy(td)
        held.append(td.get(level_key(0, "action")).clone())
        _, td = layered.step_and_maybe_reset(td)
    # the top chose at steps 0, 4 and 8 (every instance at once); in between its option was held
    assert top.rows_asked == [3, 3, 3]
    assert low.rows_asked == [3] * 12
    for step in range(12):
        start = step - step % 4
        assert torch.equal(held[step], held[start])
    assert not torch.equal(held[0], held[4])


def test_a_level_acts_for_the_acting_rows_only():
    env = make_env("Pendulum-v1", 4)
    top, low = Counting(), Counting(input_spec=Bounded(-1.0, 1.0, shape=(2,)), control_interval=2)
    hierarchy = Hierarchy([top, low], env=env)
    td = TransformedEnv(env, hierarchy.make_transform()).reset()
    td = hierarchy(td)
    before = td.get(level_key(0, "action")).clone()
    acting = torch.tensor([[True, True], [False, True], [True, True], [False, True]])
    td.set(stacked_key(ACTING), acting)
    td = hierarchy(td)
    after = td.get(level_key(0, "action"))
    assert top.rows_asked == [4, 2]
    assert torch.equal(after[[1, 3]], before[[1, 3]])
    assert not torch.equal(after[[0, 2]], before[[0, 2]])


def test_an_error_in_a_level_names_the_level():
    class Broken(RandomLevel):
        def get_action(self, td):
            raise ArithmeticError("broken on purpose")

    env = make_env("Pendulum-v1", 2)
    hierarchy = Hierarchy([RandomLevel(), Broken(input_spec=Bounded(-1.0, 1.0, shape=(2,)))], env=env)
    td = TransformedEnv(env, hierarchy.make_transform()).reset()
    with pytest.raises(ArithmeticError, match="broken on purpose") as raised:
        hierarchy(td)
    assert any("level 1 (Broken)" in note for note in getattr(raised.value, "__notes__", []))


def test_an_unchecked_tensordict_holds_what_a_checked_one_holds():
    entries = {"a": torch.randn(5, 3), "b": torch.arange(5), "c": TensorDict({"d": torch.ones(5, 2)}, [5])}
    unchecked = unchecked_tensordict(entries, torch.Size([5]))
    checked = TensorDict(entries, batch_size=[5])
    assert unchecked.batch_size == checked.batch_size == torch.Size([5])
    assert (unchecked == checked).all()
    assert unchecked.get(("c", "d")).shape == (5, 2)
