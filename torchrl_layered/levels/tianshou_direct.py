"""Direct updates and acting: tianshou's DQN and SAC run on torch tensors, the same ops in the same order.

Tianshou 2 routes every update through ``Batch`` objects built from a tianshou ``ReplayBuffer``:
at a level's network sizes (batch 64, [32, 32]) that routing costs more than the networks'
arithmetic. For the two algorithms the level's default configs build, exactly `DQN` and
`SAC` (not subclasses) with tianshou's own policy and network classes, `direct_update`
returns a function that runs one update on column tensors: the algorithm's own networks,
target networks, optimisers (their ``step``: zero, backward, clipping, step), target updates
and temperature, called in the order of tianshou's ``_preprocess_batch`` and
``_update_with_batch``, with the semi-MDP target of `SMDPReturn`. The parameters it reaches
equal tianshou's bit for bit (``test_direct_updates_equal_tianshou_updates``). `direct_act`
likewise acts as the policy's forward and exploration noise do (``test_direct_acting_...``),
without tianshou's switch to eval mode and back at every step where no layer depends on the
mode. Any other algorithm, policy or network keeps tianshou's path.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
from tianshou.algorithm import DQN, SAC
from tianshou.algorithm.algorithm_base import Algorithm
from tianshou.algorithm.modelfree.dqn import DiscreteQLearningPolicy
from tianshou.algorithm.modelfree.sac import SACPolicy, correct_log_prob_gaussian_tanh
from tianshou.data import to_numpy
from tianshou.utils.torch_utils import policy_within_training_step
from torch.distributions import Independent, Normal

from torchrl_layered.objectives.discount import DiscountPer, option_discount

#: Where the network classes the direct path calls come from: their forwards ignore tianshou's
#: ``info`` and take tensors as they take arrays, so they run without the ``Batch`` tianshou passes
#: (`tianshou_forward`: tianshou's own classes with lighter forwards).
_NET_MODULE_PREFIXES = ("torch.nn.", "tianshou.utils.net.", "torchrl_layered.nets",
                        "torchrl_layered.levels.tianshou_forward")
#: torch modules that compute differently in train and eval mode (tianshou acts in eval mode).
_MODAL_MODULES = ("torch.nn.modules.dropout", "torch.nn.modules.batchnorm", "torch.nn.modules.instancenorm",
                  "torch.nn.modules.rnn", "torch.nn.modules.transformer")


@dataclass(frozen=True)
class Columns:
    """One update's transitions as tensors: ``obs`` and ``obs_next`` ``[n, d]`` float32 (the policy
    input), ``act`` ``[n]`` int64 or ``[n, a]`` float32 (the raw action), ``rew``, ``duration``
    ``[n]`` float32 and ``terminated`` ``[n]`` bool."""

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    terminated: torch.Tensor
    obs_next: torch.Tensor
    duration: torch.Tensor

    def rows(self, start: int, stop: int) -> Columns:
        """Rows ``start:stop`` (views, no copy)."""
        return Columns(*(getattr(self, name)[start:stop] for name in self.__dataclass_fields__))


def smdp_returns(rew: torch.Tensor, duration: torch.Tensor, terminated: torch.Tensor, target_q: torch.Tensor,
                 gamma: float, discount_per: DiscountPer) -> torch.Tensor:
    """``r + gamma ** duration * (1 - terminated) * Q'(s')``, ``[n, 1]`` (tianshou's ``batch.returns`` layout)."""
    target_q = target_q.reshape(rew.shape[0], -1)
    not_terminated = (~terminated).to(target_q.dtype).reshape(-1, 1)
    discount = option_discount(gamma, duration.to(target_q.dtype).reshape(-1, 1), discount_per)
    return rew.to(target_q.dtype).reshape(-1, 1) + discount * not_terminated * target_q


def _standard_nets(*modules: torch.nn.Module) -> bool:
    """Every module (and its submodules) is of a class of torch, tianshou's networks or `torchrl_layered.nets`."""
    return all(type(sub).__module__.startswith(_NET_MODULE_PREFIXES) for module in modules for sub in module.modules())


def _minimize(optimizers: list[Algorithm.Optimizer], losses: list[torch.Tensor], only_own: bool = False) -> None:
    """``optimizer.step(loss)`` of each pair (zero, backward, clip, step), their backwards as one pass.

    Equal to the steps one after another where no loss reaches another optimiser's parameters;
    ``only_own``: gradients are computed for the optimisers' own parameters only.
    """
    for optimizer in optimizers:
        optimizer._optim.zero_grad()
    inputs = [p for o in optimizers for p in o._module.parameters() if p.requires_grad] if only_own else None
    torch.autograd.backward(losses, inputs=inputs)
    for optimizer in optimizers:
        if optimizer._max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(optimizer._module.parameters(), max_norm=optimizer._max_grad_norm)
        optimizer._optim.step()


def _mode_free(module: torch.nn.Module) -> bool:
    """No submodule computes differently in train and eval mode."""
    return not any(type(sub).__module__ in _MODAL_MODULES or isinstance(sub, torch.nn.MultiheadAttention)
                   for sub in module.modules())


def _disjoint(*modules: torch.nn.Module) -> bool:
    """No parameter belongs to two of ``modules`` (so their optimiser steps can share a backward pass)."""
    ids = [id(p) for module in modules for p in module.parameters()]
    return len(ids) == len(set(ids))


def _dqn_update(algorithm: DQN, data: Columns, discount_per: DiscountPer) -> dict[str, torch.Tensor]:
    """tianshou's ``DQN`` update (double or Nature targets, Huber or squared loss) on ``data``."""
    policy, n = algorithm.policy, data.obs.shape[0]
    with torch.no_grad():  # _target_q
        online_next, _ = policy.model(data.obs_next, state=None)
        if algorithm.use_target_network:
            target_next, _ = algorithm.model_old(data.obs_next, state=None)
        else:
            target_next = online_next
        if algorithm.is_double:
            target_q = target_next.gather(1, online_next.argmax(dim=1, keepdim=True)).squeeze(1)
        else:
            target_q = target_next.max(dim=1)[0]
    returns = smdp_returns(data.rew, data.duration, data.terminated, target_q, algorithm.gamma, discount_per)
    algorithm._periodically_update_lagged_network_weights()
    q_all, _ = policy.model(data.obs, state=None)
    q = q_all.gather(1, data.act.reshape(n, 1)).squeeze(1)
    returns = returns.flatten()
    if algorithm.huber_loss_delta is not None:
        loss = torch.nn.functional.huber_loss(q.reshape(-1, 1), returns.reshape(-1, 1),
                                              delta=algorithm.huber_loss_delta, reduction="mean")
    else:
        loss = ((returns - q).pow(2) * 1.0).mean()
    algorithm.optim.step(loss)
    return {"loss": loss.detach()}


def _sac_action(policy: SACPolicy, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``SACPolicy.forward`` inside a training step: a reparameterised squashed action and its log-probability."""
    (loc, scale), _ = policy.actor(obs, state=None)
    dist = Independent(Normal(loc=loc, scale=scale), 1)
    act = dist.rsample()
    squashed = torch.tanh(act)
    return squashed, correct_log_prob_gaussian_tanh(dist.log_prob(act).unsqueeze(-1), squashed)


def _sac_update(algorithm: SAC, data: Columns, discount_per: DiscountPer) -> dict[str, torch.Tensor | float]:
    """tianshou's ``SAC`` update (two critics, fixed or tuned temperature) on ``data``."""
    policy = algorithm.policy
    with torch.no_grad():  # _target_q: the lagged critics at the policy's next action, less the entropy term
        act_next, log_prob_next = _sac_action(policy, data.obs_next)
        min_q = torch.min(algorithm.critic_old(data.obs_next, act_next), algorithm.critic2_old(data.obs_next, act_next))
        target_q = min_q - algorithm.alpha.value * log_prob_next
    returns = smdp_returns(data.rew, data.duration, data.terminated, target_q, algorithm.gamma, discount_per).flatten()
    # the critics share nothing: their two steps run as one backward pass
    critic_losses = [((critic(data.obs, data.act).flatten() - returns).pow(2) * 1.0).mean()
                     for critic in (algorithm.critic, algorithm.critic2)]
    _minimize([algorithm.critic_optim, algorithm.critic2_optim], critic_losses)
    act, log_prob = _sac_action(policy, data.obs)
    current_q1a = algorithm.critic(data.obs, act).flatten()
    current_q2a = algorithm.critic2(data.obs, act).flatten()
    alpha = algorithm.alpha.value
    actor_loss = (alpha * log_prob.flatten() - torch.min(current_q1a, current_q2a)).mean()
    # only the policy's gradients: those tianshou also leaves on the critics are zeroed unread
    _minimize([algorithm.policy_optim], [actor_loss], only_own=True)
    alpha_loss = algorithm.alpha.update(-log_prob.detach())
    algorithm._update_lagged_network_weights()
    stats = {"actor_loss": actor_loss.detach(), "critic1_loss": critic_losses[0].detach(),
             "critic2_loss": critic_losses[1].detach(), "alpha": algorithm.alpha.value}
    if alpha_loss is not None:
        stats["alpha_loss"] = alpha_loss
    return stats


#: One update on a batch of columns, returning its losses (tensors, read after the round) and temperature.
DirectUpdate = Callable[[Columns], dict[str, torch.Tensor | float]]


def direct_update(algorithm: torch.nn.Module, discount_per: DiscountPer) -> DirectUpdate | None:
    """The direct update for ``algorithm``, or None where tianshou's own path must run.

    Direct: exactly tianshou's `DQN` with a `DiscreteQLearningPolicy`, or `SAC` with a
    `SACPolicy`, without learning-rate schedulers, and with networks of tianshou's (or
    `torchrl_layered.nets`') classes.
    """
    if getattr(algorithm, "lr_schedulers", None):  # stepped per update by tianshou's path
        return None
    if type(algorithm) is DQN and type(algorithm.policy) is DiscreteQLearningPolicy \
            and _standard_nets(algorithm.policy.model):
        return partial(_dqn_update, algorithm, discount_per=discount_per)  # a partial pickles with its level
    if type(algorithm) is SAC and type(algorithm.policy) is SACPolicy \
            and _standard_nets(algorithm.policy.actor, algorithm.critic, algorithm.critic2) \
            and _disjoint(algorithm.policy, algorithm.critic, algorithm.critic2):
        return partial(_sac_update, algorithm, discount_per=discount_per)
    return None


def _dqn_act(policy: DiscreteQLearningPolicy, obs: torch.Tensor, explore: bool) -> np.ndarray:
    """``DiscreteQLearningPolicy`` acting: the greedy action, then epsilon-greedy noise when exploring."""
    logits, _ = policy.model(obs, state=None)
    act = to_numpy(logits.argmax(dim=1))
    if not explore:
        return act
    with policy_within_training_step(policy):  # the training epsilon
        return policy.add_exploration_noise(act, SimpleNamespace(obs=obs))


def _sac_act(policy: SACPolicy, obs: torch.Tensor, explore: bool) -> np.ndarray:
    """``SACPolicy`` acting: a sampled squashed action and exploration noise, or the squashed mode."""
    (loc, scale), _ = policy.actor(obs, state=None)
    if not explore:
        return to_numpy(torch.tanh(loc))
    act = to_numpy(torch.tanh(Independent(Normal(loc=loc, scale=scale), 1).rsample()))
    return policy.add_exploration_noise(act, SimpleNamespace(obs=obs))


#: The raw action (numpy, as tianshou's collector gets it) for a policy input, exploring or not.
DirectAct = Callable[[torch.Tensor, bool], np.ndarray]


def direct_act(algorithm: torch.nn.Module) -> DirectAct | None:
    """Acting for ``algorithm`` without tianshou's ``Batch`` and mode switches, or None where tianshou's path must run.

    Direct: the policies of `direct_update`'s algorithms whose networks have no mode-dependent layer.
    """
    policy = getattr(algorithm, "policy", None)
    if type(algorithm) is DQN and type(policy) is DiscreteQLearningPolicy \
            and _standard_nets(policy.model) and _mode_free(policy):
        return partial(_dqn_act, policy)
    if type(algorithm) is SAC and type(policy) is SACPolicy and _standard_nets(policy.actor) and _mode_free(policy):
        return partial(_sac_act, policy)
    return None
