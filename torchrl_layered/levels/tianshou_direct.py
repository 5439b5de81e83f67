"""Direct updates: tianshou's DQN and SAC updates run on torch tensors, the same ops in the same order.

Tianshou 2 routes every update through ``Batch`` objects built from a tianshou ``ReplayBuffer``:
at a level's network sizes (batch 64, [32, 32]) that routing costs more than the networks'
arithmetic. For the two algorithms the level's default configs build, exactly `DQN` and
`SAC` (not subclasses) with tianshou's own policy and network classes, `direct_update`
returns a function that runs one update on column tensors: the algorithm's own networks,
target networks, optimisers (their ``step``: zero, backward, clipping, step), target updates
and temperature, called in the order of tianshou's ``_preprocess_batch`` and
``_update_with_batch``, with the semi-MDP target of `SMDPReturn`. The parameters it reaches
equal tianshou's bit for bit (``test_direct_updates_equal_tianshou_updates``). Any other
algorithm, policy or network keeps tianshou's path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tianshou.algorithm import DQN, SAC
from tianshou.algorithm.modelfree.dqn import DiscreteQLearningPolicy
from tianshou.algorithm.modelfree.sac import SACPolicy, correct_log_prob_gaussian_tanh
from torch.distributions import Independent, Normal

from torchrl_layered.objectives.discount import DiscountPer, option_discount

#: Where the network classes the direct path calls come from: their forwards ignore tianshou's
#: ``info`` and take tensors as they take arrays, so they run without the ``Batch`` tianshou passes.
_NET_MODULE_PREFIXES = ("torch.nn.", "tianshou.utils.net.", "torchrl_layered.nets")


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


def _dqn_update(algorithm: DQN, data: Columns, gamma: float, discount_per: DiscountPer) -> dict[str, torch.Tensor]:
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
    returns = smdp_returns(data.rew, data.duration, data.terminated, target_q, gamma, discount_per)
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


def _sac_update(algorithm: SAC, data: Columns, gamma: float, discount_per: DiscountPer) -> dict[str, torch.Tensor | float]:
    """tianshou's ``SAC`` update (two critics, fixed or tuned temperature) on ``data``."""
    policy = algorithm.policy
    with torch.no_grad():  # _target_q: the lagged critics at the policy's next action, less the entropy term
        act_next, log_prob_next = _sac_action(policy, data.obs_next)
        min_q = torch.min(algorithm.critic_old(data.obs_next, act_next), algorithm.critic2_old(data.obs_next, act_next))
        target_q = min_q - algorithm.alpha.value * log_prob_next
    returns = smdp_returns(data.rew, data.duration, data.terminated, target_q, gamma, discount_per).flatten()
    losses = {}
    for name, critic, optim in [("critic1_loss", algorithm.critic, algorithm.critic_optim),
                                ("critic2_loss", algorithm.critic2, algorithm.critic2_optim)]:
        loss = ((critic(data.obs, data.act).flatten() - returns).pow(2) * 1.0).mean()
        optim.step(loss)
        losses[name] = loss.detach()
    act, log_prob = _sac_action(policy, data.obs)
    current_q1a = algorithm.critic(data.obs, act).flatten()
    current_q2a = algorithm.critic2(data.obs, act).flatten()
    alpha = algorithm.alpha.value
    actor_loss = (alpha * log_prob.flatten() - torch.min(current_q1a, current_q2a)).mean()
    algorithm.policy_optim.step(actor_loss)
    alpha_loss = algorithm.alpha.update(-log_prob.detach())
    algorithm._update_lagged_network_weights()
    stats = {"actor_loss": actor_loss.detach(), **losses, "alpha": algorithm.alpha.value}
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
    gamma = algorithm.gamma
    if type(algorithm) is DQN and type(algorithm.policy) is DiscreteQLearningPolicy \
            and _standard_nets(algorithm.policy.model):
        return lambda data: _dqn_update(algorithm, data, gamma, discount_per)
    if type(algorithm) is SAC and type(algorithm.policy) is SACPolicy \
            and _standard_nets(algorithm.policy.actor, algorithm.critic, algorithm.critic2):
        return lambda data: _sac_update(algorithm, data, gamma, discount_per)
    return None
