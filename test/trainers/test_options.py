"""`trainers/options.py`: hierarchy kwargs are checked against the factory's annotations and the range rules."""
from __future__ import annotations

from typing import Literal, Sequence

import pytest

from torchrl_layered.trainers import HIERARCHIES, ConfigError, compose_config, parse_config
from torchrl_layered.trainers.config import group_options
from torchrl_layered.trainers.options import check_option_values, range_of


def factory(env, *, hidden_sizes: Sequence[int] = (8,), mode: Literal["a", "b"] = "a", config: dict | None = None,
            flag: bool = False, scale: float = 1.0, untyped=3, anything=None):
    """A stand-in hierarchy factory."""


@pytest.mark.parametrize("name", group_options("hierarchy"))
def test_every_shipped_hierarchy_config_passes_the_checks(name):
    config = parse_config(compose_config([f"hierarchy={name}"]))
    check_option_values(name, HIERARCHIES[name], config.hierarchy.kwargs)


GOOD = [{"hidden_sizes": [4, 4]}, {"hidden_sizes": (4,)}, {"mode": "b"}, {"config": None}, {"config": {"lr": 0.1}},
        {"flag": True}, {"scale": 2}, {"untyped": 5}, {"anything": "x"}]
BAD = [
    ({"hidden_sizes": 4}, "hierarchy.kwargs.hidden_sizes must be of type Sequence[int] (hierarchy 'toy'); got 4"),
    ({"hidden_sizes": [4, "x"]}, "hierarchy.kwargs.hidden_sizes must be of type Sequence[int]"),
    ({"mode": "c"}, "hierarchy.kwargs.mode must be of type Literal['a', 'b']"),
    ({"config": [1]}, "hierarchy.kwargs.config must be of type dict | None"),
    ({"flag": 1}, "hierarchy.kwargs.flag must be true or false"),
    ({"scale": "big"}, "hierarchy.kwargs.scale must be a number"),
    ({"untyped": 2.5}, "hierarchy.kwargs.untyped must be an integer"),  # the default's type
    ({"hidden_sizes": [4, 0]}, "hierarchy.kwargs.hidden_sizes entries must be an integer > 0; got [4, 0]"),
    ({"config": {"lr": 0.0}}, "hierarchy.kwargs.config.lr must be a number > 0; got 0.0"),
]


@pytest.mark.parametrize("kwargs", GOOD, ids=str)
def test_values_that_fit_the_annotations_pass(kwargs):
    check_option_values("toy", factory, kwargs)


@pytest.mark.parametrize("kwargs,message", BAD, ids=[str(b[0]) for b in BAD])
def test_a_value_of_the_wrong_type_or_range_is_refused_naming_the_option(kwargs, message):
    with pytest.raises(ConfigError) as refused:
        check_option_values("toy", factory, kwargs)
    assert str(refused.value).startswith(message), str(refused.value)


@pytest.mark.parametrize("name,good,bad", [
    ("batch_size", 1, 0), ("hidden_sizes", 1, -1), ("num_updates", 1, 0), ("n_skill_samples", 2, 0),
    ("horizon", 1, 0), ("update_interval", 1, 0), ("skill_dim", 1, 0), ("warm_up_steps", 0, -1),
    ("gamma", 1.0, 0.0), ("gamma", 0.5, 1.01), ("tau", 0.01, 0), ("elite_ratio", 1.0, 1.5), ("lr", 1e-4, 0),
    ("planner_lr", 1e-4, -1.0), ("fixed_std", 0.1, 0), ("switch_random_prob", 0.0, 1.1), ("momentum", 0.0, 1.0),
    ("horizon", 3, 2.5),
])
def test_common_option_names_have_ranges(name, good, bad):
    bound = range_of(name)
    assert bound.accepts(good) and not bound.accepts(bad), (name, str(bound))


def test_options_without_a_rule_are_not_range_checked():
    assert range_of("planner") is None and range_of("vmin") is None
