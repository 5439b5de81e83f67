"""One discount rule for every level: ``gamma`` per env step, ``gamma ** duration`` per option.

Checked by hand on options cut short (a child handing control back at an episode end inside
the option), for the planner's value targets and its planning discount (Tianshou's targets:
test/levels/test_tianshou.py);
``discount_per="option"`` gives the reference library's ``gamma`` per option.
"""
from __future__ import annotations

import pytest
import torch
from helpers import ScriptedEnv
from tensordict import TensorDict
from torchrl.data import Bounded

from torchrl_layered import Hierarchy, RandomLevel
from torchrl_layered.collectors import make_collector
from torchrl_layered.levels import PlannerLevel
from torchrl_layered.objectives.discount import option_discount, planning_discount
from torchrl_layered.objectives.predictor import n_step_targets


def test_the_rule_by_hand():
    duration = torch.tensor([[1], [4], [2]])
    assert torch.allclose(option_discount(0.9, duration), torch.tensor([[0.9], [0.9**4], [0.9**2]]))
    assert torch.allclose(option_discount(0.9, duration, "option"), torch.full((3, 1), 0.9))
    assert planning_discount(0.9, 2.5) == pytest.approx(0.9**2.5)
    assert planning_discount(0.9, 2.5, "option") == 0.9
    with pytest.raises(ValueError, match="discount_per must be one of"):
        PlannerLevel(discount_per="episode")


def test_n_step_targets_multiply_per_transition_discounts():
    reward = torch.tensor([[1.0, 2.0, 3.0]])
    value = torch.tensor([[10.0, 20.0, 30.0]])
    no = torch.zeros(1, 3, dtype=torch.bool)
    gamma = torch.tensor([[0.5, 0.25, 0.8]])  # options of different lengths
    y = n_step_targets(reward, value, no, no, gamma, n=2)
    assert torch.allclose(y, torch.tensor([[1 + 0.5 * 2 + 0.5 * 0.25 * 20, 2 + 0.25 * 3 + 0.25 * 0.8 * 30, 3 + 0.8 * 30]]))


def early_ending_options():
    """A planner over 4-step options whose episodes last 6 steps: durations 4 then 2 (cut by the episode end)."""
    torch.manual_seed(0)
    env = ScriptedEnv([[(6, False)], [(6, True)]])
    top = PlannerLevel(horizon=2, num_samples=8, num_iterations=1, warm_up_steps=10_000, batch_size=4, gamma=0.9)
    low = RandomLevel(input_spec=Bounded(-1.0, 1.0, (2,)), control_interval=4)
    hierarchy = Hierarchy([top, low], env=env)
    collector = make_collector(env, hierarchy, frames_per_batch=24, total_frames=24)
    (batch,) = list(collector)
    collector.shutdown()
    return hierarchy, hierarchy.transitions(batch)[0]


def test_the_planner_bootstraps_each_option_with_gamma_to_its_duration():
    hierarchy, transitions = early_ending_options()
    top = hierarchy.levels[0]
    assert sorted(transitions["next", "duration"].unique().tolist()) == [2, 4]
    loss = top.loss
    value_net = top.predictor.value.net[-1]
    with torch.no_grad():  # a value net that answers 3.0 everywhere, target included
        for params in (loss.value_network_params, loss.target_value_network_params):
            for key, p in params.items(True, True):
                if key[-1] == "bias" and p.shape == value_net.bias.shape and p.numel() == 1:
                    p.fill_(3.0)
                elif p.dim() == 2 and p.shape == value_net.weight.shape:
                    p.zero_()
    data = transitions.select("observation", "action", "next")
    data["next", "reward"] = torch.ones_like(data["next", "reward"])
    not_terminated = (~data["next", "terminated"]).float().squeeze(-1)
    duration = data["next", "duration"].float().squeeze(-1)
    for per, discount in (("env_step", 0.9**duration), ("option", torch.full_like(duration, 0.9))):
        loss.discount_per = per
        target = 1.0 + discount * not_terminated * 3.0
        expected = ((3.0 - target) ** 2).mean()
        assert torch.allclose(loss(data)["loss_value"], expected, atol=1e-5), per
    top.record(top.accept(transitions))
    assert top.mean_duration == pytest.approx(float(duration.mean()))


def test_the_planner_plans_with_gamma_to_the_mean_duration():
    seen = []

    def reward(state, context, action):
        return torch.ones(action.shape[:-1])

    from torchrl_layered.predictors.encoders import IdentityEncoder
    from torchrl_layered.predictors.predictor import KnownModel, Predictor

    class Recording(Predictor):
        def returns(self, *args, gamma=1.0, **kwargs):
            seen.append(gamma)
            return super().returns(*args, gamma=gamma, **kwargs)

    level = PlannerLevel(Recording(IdentityEncoder(1), KnownModel(lambda s, a, c: s), reward), learn_predictor=False,
                         horizon=2, num_samples=4, num_iterations=1, gamma=0.9, warm_up_steps=0)
    level.initialize(Bounded(-1.0, 1.0, (1,)), Bounded(-1.0, 1.0, (1,)))
    level.n_transitions, level.env_steps = 4, 10  # options of 2.5 env steps on average
    td = TensorDict({"observation": torch.zeros(1, 1), "steps": torch.ones(1, 1, dtype=torch.long),
                     "state": level.get_state_spec().zero((1,))}, [1])
    level.get_action(td)
    assert seen[-1] == pytest.approx(0.9**2.5)



def test_tdmpc2_bootstraps_each_option_with_gamma_to_its_duration():
    from torchrl_layered.modules.tdmpc2 import TDMPC2WorldModel
    from torchrl_layered.objectives.tdmpc2 import TDMPC2Loss
    from torchrl_layered.tdmpc2 import get_default_tdmpc2_config, resolve_tdmpc2_config

    for per in ("env_step", "option"):
        cfg = get_default_tdmpc2_config()
        cfg.update(model_size=1, enc_dim=32, mlp_dim=32, latent_dim=16, num_q=3, gamma=0.9, discount_per=per)
        cfg = resolve_tdmpc2_config(cfg)
        world_model = TDMPC2WorldModel(4, 2, cfg)
        loss = TDMPC2Loss(world_model, cfg)
        target = loss.target_qvalue_network_params  # every target Q predicts 5.0
        encoded = world_model.two_hot.encode(torch.tensor([[5.0]]))[0]
        with torch.no_grad():
            target["out", "weight"].zero_()
            target["out", "bias"].copy_(torch.log(encoded + 1e-9).expand_as(target["out", "bias"]))
        next_z = torch.softmax(torch.randn(4, 16), -1)
        reward = torch.tensor([[1.0], [1.0], [1.0], [1.0]])
        terminated = torch.tensor([[0.0], [0.0], [1.0], [0.0]])
        duration = torch.tensor([[1], [4], [4], [2]])  # the last option cut short by an episode end
        got = loss.value_target(next_z, reward, terminated, duration=duration)
        discount = 0.9 ** duration.float() if per == "env_step" else torch.full((4, 1), 0.9)
        assert torch.allclose(got, reward + discount * (1 - terminated) * 5.0, atol=1e-3), per


def test_tdmpc2_plans_with_gamma_to_the_mean_option_duration():
    from torchrl_layered.levels import TDMPC2Level

    level = TDMPC2Level(warm_up_steps=10)
    level.n_transitions, level.env_steps = 2, 9  # two options of 4.5 env steps
    assert level.mean_duration == 4.5
    assert level.planning_gamma == pytest.approx(level.cfg["gamma"] ** 4.5)
