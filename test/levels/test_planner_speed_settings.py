"""`PlannerLevel`'s speed settings: compiled plans and updates with the losses and gradients of eager ones; bfloat16 plans."""
from __future__ import annotations

import pickle
import warnings
from functools import partial

import pytest
import torch
from torchrl.envs import TransformedEnv

from torchrl_layered import Hierarchy
from torchrl_layered.collectors import make_collector
from torchrl_layered.envs import make_env
from torchrl_layered.hierarchies import make_hierarchy
from torchrl_layered.levels import PlannerLevel
from torchrl_layered.modules.compiled import CompiledOnUse
from torchrl_layered.predictors import default_predictor_factory


def level_and_batch(compile: bool):
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 2)
    env.set_seed(0)
    level = PlannerLevel(planner="cem", horizon=3, num_samples=16, num_iterations=2, warm_up_steps=0, batch_size=32,
                         compile=compile)
    hierarchy = Hierarchy([level], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=2 * 20, total_frames=2 * 20)
    hierarchy.extend(next(iter(collector)))
    collector.shutdown()
    level.loss.model_loss.bootstrap = False  # no random resampling: compiled and eager losses must agree
    return level, level.sample_buffer()


def losses_and_gradients(level, forward, batch):
    losses = forward(batch.clone())
    level.optimizer.zero_grad(set_to_none=True)
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    grads = {name: p.grad.clone() for name, p in level.loss.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items() if k.startswith("loss_")}, grads


@pytest.mark.compile
def test_a_compiled_planner_level_plans_and_updates_as_an_eager_one():
    level, batch = level_and_batch(compile=True)
    assert level.predictor.compile_rollout, "compile=True compiles the predictor's rollout"
    expected_losses, expected_grads = losses_and_gradients(level, level.loss.forward, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would warn
        compiled = CompiledOnUse(level.loss.forward, "test")
        got_losses, got_grads = losses_and_gradients(level, compiled, batch)
        assert not compiled.failed
        metrics = level.learn()  # the level's own compiled update
    assert metrics and all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    for key, value in expected_losses.items():
        torch.testing.assert_close(got_losses[key], value, rtol=1e-4, atol=1e-5)
    assert got_grads.keys() == expected_grads.keys() and got_grads
    for name, grad in expected_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)
    clone = pickle.loads(pickle.dumps(level))  # collector workers receive levels by pickle
    assert clone.compile_enabled and clone.__dict__["_compiled_loss"]._compiled is None


@pytest.mark.parametrize("flag", [1, "true", None])
def test_a_compile_that_is_not_a_bool_is_refused(flag):
    with pytest.raises(TypeError, match="compile must be a bool"):
        PlannerLevel(compile=flag)


@pytest.mark.parametrize("name, kwargs, env_name", [
    ("planner", dict(compile=True, planning_dtype="bfloat16"), "Pendulum-v1"),
    ("planner_splates", dict(planner_level=dict(compile=True, planning_dtype="bfloat16")), "Maze2D-Medium-v0"),
])
def test_the_app_hierarchies_pass_the_speed_settings_to_their_planner_level(name, kwargs, env_name):
    hierarchy = make_hierarchy(name, make_env(env_name, 2), **kwargs)
    top = hierarchy.levels[0]
    assert isinstance(top, PlannerLevel) and top.compile_enabled and top.predictor.compile_rollout
    assert top.predictor.planning_dtype == "bfloat16"
    default = make_hierarchy(name, make_env(env_name, 2)).levels[0]
    assert not default.compile_enabled and not default.predictor.compile_rollout
    assert default.predictor.planning_dtype == "float32"


def test_a_bfloat16_planner_level_plans_and_refuses_an_unknown_dtype():
    with pytest.raises(ValueError, match="PlannerLevel: planning_dtype must be one of"):
        PlannerLevel(planning_dtype="fp8")
    torch.manual_seed(0)
    env = make_env("Pendulum-v1", 2)
    level = PlannerLevel(planner="cem", horizon=3, num_samples=16, num_iterations=2, warm_up_steps=0,
                         planning_dtype="bfloat16")
    hierarchy = Hierarchy([level], env=env)
    calls = []
    rollout = level.predictor._rollout
    level.predictor._rollout = lambda *a, **kw: calls.append(
        (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))) or rollout(*a, **kw)
    action = hierarchy(TransformedEnv(env, hierarchy.make_transform()).reset())["action"]
    assert calls and set(calls) == {(True, torch.bfloat16)} and not torch.is_autocast_enabled("cpu")
    assert action.shape == (2, 1) and bool(action.isfinite().all())
    # the level's default leaves a predictor built for bfloat16 as it is
    factory = partial(default_predictor_factory, num_members=1, hidden_sizes=(8,), planning_dtype="bfloat16")
    own = PlannerLevel(predictor_factory=factory, warm_up_steps=0)
    Hierarchy([own], env=env)
    assert own.predictor.planning_dtype == "bfloat16"


@pytest.mark.parametrize("name, kwargs, env_name, level_index", [
    ("tdmpc2", dict(config=dict(planning_dtype="bfloat16", update_dtype="bfloat16")), "Pendulum-v1", 0),
    ("planner_splates", dict(tdmpc2=dict(planning_dtype="bfloat16", update_dtype="bfloat16")), "Maze2D-Medium-v0", 1),
    ("planner_dads", dict(tdmpc2=dict(planning_dtype="bfloat16", update_dtype="bfloat16")), "Maze2D-Medium-v0", 1),
])
def test_the_app_hierarchies_pass_the_precision_settings_to_their_td_mpc2_levels(name, kwargs, env_name, level_index):
    level = make_hierarchy(name, make_env(env_name, 2), **kwargs).levels[level_index]
    assert (level.cfg["planning_dtype"], level.cfg["update_dtype"]) == ("bfloat16", "bfloat16")
    default = make_hierarchy(name, make_env(env_name, 2)).levels[level_index]
    assert (default.cfg["planning_dtype"], default.cfg["update_dtype"]) == ("float32", "float32")


@pytest.mark.parametrize("env_name", ["Pendulum-v1", "Maze2D-Medium-v0"])
def test_the_planner_app_hierarchy_passes_the_activation_to_its_predictor(env_name):
    level = make_hierarchy("planner", make_env(env_name, 2), activation="ReLU").levels[0]
    assert type(level.predictor.model.activation) is torch.nn.ReLU
    assert any(isinstance(m, torch.nn.ReLU) for m in level.predictor.reward.modules())
    default = make_hierarchy("planner", make_env(env_name, 2)).levels[0]
    assert type(default.predictor.model.activation) is torch.nn.SiLU
