"""`RewardPredictorLoss`: trains a `RewardPredictor` (dynamics, reward, value, termination)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import dispatch
from tensordict.utils import NestedKey
from torch import nn
from torchrl.objectives import LossModule

from torchrl_layered.keys import NEXT_DURATION
from torchrl_layered.predictors.predictor import RewardPredictor
from torchrl_layered.objectives.discount import DiscountPer, check_discount_per, option_discount
from torchrl_layered.objectives.ensemble import EnsembleModelLoss


def _ahead(x: torch.Tensor, j: int, fill) -> torch.Tensor:
    """``x`` shifted ``j`` steps back along the last dim: ``out[..., t] = x[..., t + j]``."""
    return F.pad(x[..., j:], (0, j), value=fill) if j else x


def n_step_targets(
    reward: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float | torch.Tensor,
    n: int,
) -> torch.Tensor:
    """n-step TD targets along the last dim of ``[*, T]`` sequences.

    ``y_t = sum_{j<m} gamma^j r_{t+j} + gamma^m (1 - terminated_e) V(s'_e)`` with
    ``e = t + m - 1`` and ``m`` the number of steps until ``n``, the episode end (``done``)
    or the end of the sequence, whichever comes first: a truncated end bootstraps, a
    terminated one does not. ``next_value[..., t]`` is the value of step t's next observation.
    ``gamma`` may be a ``[*, T]`` tensor of per-transition discounts (semi-MDP options:
    `option_discount`), which then multiply along the window.
    """
    gamma = torch.as_tensor(gamma, dtype=reward.dtype, device=reward.device).expand_as(reward)
    if n < 1:
        raise ValueError(f"n_step_targets needs n >= 1; got {n}")
    time = reward.shape[-1]
    total = torch.zeros_like(reward)
    bootstrap = torch.zeros_like(reward)
    discount = torch.ones_like(reward)
    open_ = torch.ones_like(reward, dtype=torch.bool)  # the window from t reaches step t + j
    for j in range(min(n, time)):
        included = open_ & _ahead(torch.ones_like(open_), j, False)
        total = total + torch.where(included, discount * _ahead(reward, j, 0.0), 0.0)
        discount = torch.where(included, discount * _ahead(gamma, j, 1.0), discount)
        alive = (~_ahead(terminated.to(torch.bool), j, True)).to(reward.dtype)
        bootstrap = torch.where(included, discount * alive * _ahead(next_value, j, 0.0), bootstrap)
        open_ = included & ~_ahead(done.to(torch.bool), j, True)
    return total + bootstrap


class RewardPredictorLoss(LossModule):
    """Dynamics (ensemble NLL), reward (MSE), value (n-step TD to a target net) and termination.

    Feed it flat transitions ``[N]`` (1-step targets, ``gamma ** 1`` per transition) or
    sub-trajectories ``[B, T]`` from a `SliceSampler` (n-step targets along ``T``). The
    value target network lives in ``target_value_network_params``: update it with
    ``torchrl.objectives.SoftUpdate(loss, tau=...)``.

    Args:
        predictor: the `RewardPredictor` to train.
        gamma: discount per env step; a transition with a ``("next", "duration")`` entry
            bootstraps with ``gamma ** duration`` (`torchrl_layered.objectives.discount`).
        discount_per: ``"env_step"`` (``gamma ** duration``) or ``"option"`` (``gamma`` per transition).
        n_steps: horizon of the value targets for sequence batches.
        reward_coef, value_coef: weights of the reward and value losses.
        bootstrap: resample the batch per ensemble member.
    """

    value_network: nn.Module
    value_network_params: TensorDictParams
    target_value_network_params: TensorDictParams

    @dataclass
    class _AcceptedKeys:
        observation: NestedKey = "observation"
        level_input: NestedKey = "level_input"
        action: NestedKey = "action"
        reward: NestedKey = ("next", "reward")
        duration: NestedKey = NEXT_DURATION
        next_observation: NestedKey = ("next", "observation")
        terminated: NestedKey = ("next", "terminated")
        done: NestedKey = ("next", "done")

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        predictor: RewardPredictor,
        *,
        gamma: float = 0.99,
        discount_per: DiscountPer = "env_step",
        n_steps: int = 1,
        reward_coef: float = 1.0,
        value_coef: float = 1.0,
        bootstrap: bool = True,
    ):
        super().__init__()
        self.predictor = predictor
        self.gamma, self.n_steps = gamma, n_steps
        self.discount_per = check_discount_per(discount_per, type(self).__name__)
        self.reward_coef, self.value_coef = reward_coef, value_coef
        self.model_loss = EnsembleModelLoss(predictor.model, bootstrap=bootstrap)
        if predictor.value is not None:
            self.convert_to_functional(predictor.value, "value_network", create_target_params=True)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    @property
    def in_keys(self):
        keys = self.tensor_keys
        inputs = [keys.level_input] if self.predictor.input_dim else []
        return [keys.observation, *inputs, keys.action, keys.reward, keys.next_observation, keys.terminated, keys.done]

    @property
    def out_keys(self):
        return ["loss_model", "loss_termination", "loss_reward", "loss_value"]

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self.tensor_keys
        td = tensordict
        predictor = self.predictor
        state, context = predictor.encode(td.get(keys.observation).float())
        next_state, next_context = predictor.encode(td.get(keys.next_observation).float())
        action = td.get(keys.action).float()
        reward = td.get(keys.reward).float().squeeze(-1)
        terminated = td.get(keys.terminated).squeeze(-1)
        done = td.get(keys.done).squeeze(-1)
        # the level input conditions what the option is worth, not where it leads (see `Predictor`)
        level_input = td.get(keys.level_input).float() if predictor.input_dim else None
        head_context = predictor.head_context(context, level_input)
        next_head_context = predictor.head_context(next_context, level_input)
        n = reward.numel()
        flat = lambda x: x.reshape(n, x.shape[-1])  # noqa: E731
        terms = self.model_loss.model_terms(
            flat(state), flat(action), flat(next_state).detach(), terminated.reshape(-1), flat(context)
        )
        terms["loss_reward"] = self.reward_coef * F.mse_loss(predictor.reward(state, head_context, action), reward)
        if predictor.value is not None:
            with torch.no_grad(), self.target_value_network_params.to_module(self.value_network):
                next_value = self.value_network(next_state, next_head_context)
            duration = td.get(keys.duration, None)
            if duration is None:
                discount = torch.full_like(reward, self.gamma)
            else:
                discount = option_discount(self.gamma, duration.squeeze(-1), self.discount_per).to(reward.dtype)
            if td.batch_dims >= 2:
                target = n_step_targets(reward, next_value, terminated, done, discount, self.n_steps)
            else:
                target = reward + discount * (~terminated).to(reward.dtype) * next_value
            terms["loss_value"] = self.value_coef * F.mse_loss(self.value_network(state, head_context), target)
        return TensorDict(terms, batch_size=[])
