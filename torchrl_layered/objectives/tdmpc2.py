"""`TDMPC2Loss`: the TD-MPC2 objective (Hansen et al., ICLR 2024) as a TorchRL `LossModule`."""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import dispatch
from tensordict.utils import NestedKey
from torchrl.data import Bounded
from torchrl.objectives import LossModule

from torchrl_layered.keys import NEXT_DURATION
from torchrl_layered.modules.tdmpc2 import QEnsemble, TDMPC2WorldModel
from torchrl_layered.objectives.discount import option_discount
from torchrl_layered.objectives.grad_clip import finite_clipped_norms
from torchrl_layered.objectives.optim import adam
from torchrl_layered.objectives.tdmpc2_config import resolve_tdmpc2_config


class TDMPC2Loss(LossModule):
    """Joint-embedding consistency, reward, value, termination and policy losses of TD-MPC2.

    Feed it sub-trajectories ``[B, T]`` of transitions (e.g. from a `SliceSampler` with
    ``slice_len=T``; ``T`` transitions hold ``T + 1`` observations). From the encoding of the
    first observation the loss unrolls the latent dynamics over the ``T`` actions and weights
    step ``t`` by ``rho ** t``:

    - ``loss_consistency``: the unrolled latent vs the (detached) encoding of the next observation;
    - ``loss_reward``: two-hot cross-entropy of the predicted reward;
    - ``loss_value``: two-hot cross-entropy of every Q to the TD target
      ``r + gamma * (1 - terminated) * min(two random target Qs)(z', pi(z'))`` (conditioned
      on ``("next", "goal")`` where the batch has it, else on the step's own goal; subclasses
      change the bootstrap term with `bootstrap_value`). Target Qs never use dropout (the
      official target networks stay in eval mode), so the target is a function of the batch;
    - ``loss_termination``: binary cross-entropy of the termination head;
    - ``loss_policy``: ``mean_t rho ** t * mean_b (entropy_coef * log_pi - Q / scale)`` over all
      ``T + 1`` latents ``z_0 .. z_T`` (detached) with the Q weights held fixed, ``log_pi`` the official
      action-size-scaled entropy term (`TDMPC2WorldModel.pi`) and ``scale`` the running 5-95
      percentile range of Q (`update_value_scale`).

    The ``loss_*`` entries are already weighted by the config's coefficients: sum them, or
    better step them with `tdmpc2_update` (the official update: the policy has its own Adam and
    its own gradient clipping). The target Q ensemble lives in ``target_qvalue_network_params``:
    update it with ``SoftUpdate(loss, tau=config["tau"])``.

    Args:
        world_model: the `TDMPC2WorldModel` to train.
        config: a TD-MPC2 config (`get_default_tdmpc2_config`), resolved here.
        action_spec: the env's `Bounded` action spec, when actions in the data are not already
            in [-1, 1] (the loss rescales them).
    """

    qvalue_network: QEnsemble
    qvalue_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams

    @dataclass
    class _AcceptedKeys:
        observation: NestedKey = "observation"
        action: NestedKey = "action"
        reward: NestedKey = ("next", "reward")
        next_observation: NestedKey = ("next", "observation")
        terminated: NestedKey = ("next", "terminated")
        duration: NestedKey = NEXT_DURATION
        goal: NestedKey = "goal"
        next_goal: NestedKey = ("next", "goal")

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(self, world_model: TDMPC2WorldModel, config: dict[str, Any] | None = None, *,
                 action_spec: Bounded | None = None):
        super().__init__()
        self.cfg = resolve_tdmpc2_config(config)
        self.world_model = world_model
        self.convert_to_functional(world_model.qs, "qvalue_network", create_target_params=True)
        self.register_buffer("value_scale", torch.ones(()))
        if action_spec is not None:
            self.register_buffer("action_low", action_spec.space.low.clone())
            self.register_buffer("action_high", action_spec.space.high.clone())
        else:
            self.action_low = self.action_high = None

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    @property
    def in_keys(self):
        keys = self.tensor_keys
        return [keys.observation, keys.action, keys.reward, keys.next_observation, keys.terminated]

    @property
    def out_keys(self):
        return ["loss_consistency", "loss_reward", "loss_value", "loss_termination", "loss_policy"]

    def _q(self, params: TensorDictParams, z, a, zg, members: torch.Tensor | None = None, *,
           weight_grads: bool = True) -> torch.Tensor:
        """Q logits with ``params``. ``weight_grads=False``: differentiable in the inputs only (the
        official ``track_q_grad(False)`` around the policy's Q), no gradient of the weights recorded,
        so the backward skips their products. (Detached weights would not do: ``to_module`` wraps
        them in parameters that require gradients again, and the backward computed those
        gradients to throw them away: ~7% of a default-size update's matmul work.)"""
        with params.to_module(self.qvalue_network):
            frozen = [] if weight_grads else [p for p in self.qvalue_network.parameters() if p.requires_grad]
            for p in frozen:
                p.requires_grad_(False)
            try:
                return self.world_model.q_logits(z, a, zg, members)
            finally:
                for p in frozen:
                    p.requires_grad_(True)

    def _target_q(self, z, a, zg, members: torch.Tensor | None = None) -> torch.Tensor:
        """Target Q logits, always without dropout (as the official target networks, kept in eval mode)."""
        with _eval_mode(self.qvalue_network):
            return self._q(self.target_qvalue_network_params, z, a, zg, members)

    @torch.no_grad()
    def update_value_scale(self, q: torch.Tensor) -> None:
        """The official ``RunningScale.update``: lerp ``value_scale`` by ``tau`` towards the 5-95
        percentile range of ``q`` (linear interpolation), clamped to >= 1 before the lerp."""
        flat = q.detach().reshape(-1).float()
        bounds = torch.quantile(flat, torch.tensor([0.05, 0.95], device=flat.device, dtype=flat.dtype))
        spread = (bounds[1] - bounds[0]).clamp_min(1.0)
        self.value_scale.lerp_(spread.to(self.value_scale.dtype), self.cfg["tau"])

    def _two_q(self, q_of_members: Callable[[torch.Tensor], torch.Tensor], device) -> torch.Tensor:
        """Two random members of the ensemble, decoded, ``[2, *, 1]``; only those two are computed."""
        return self.world_model.two_hot.decode(q_of_members(self.world_model.qs.random_pair(device)))

    @torch.no_grad()
    def next_value(self, next_z, zg=None) -> torch.Tensor:
        """``min(two random target Qs)(z', pi(z'))``, ``[*, 1]``."""
        next_action, _ = self.world_model.pi(next_z, zg)
        return self._two_q(partial(self._target_q, next_z, next_action, zg), next_z.device).min(0).values

    @torch.no_grad()
    def value_target(self, next_z, reward, terminated, zg=None, duration=None) -> torch.Tensor:
        """``r + gamma ** duration * (1 - terminated) * min(two random target Qs)(z', pi(z'))``."""
        return reward + self.discount(reward, duration) * (1 - terminated) * self.next_value(next_z, zg)

    def discount(self, reward: torch.Tensor, duration: torch.Tensor | None) -> torch.Tensor | float:
        """The bootstrap discount of each transition (`objectives.discount`; ``gamma`` without durations)."""
        if duration is None:
            return self.cfg["gamma"]
        return option_discount(self.cfg["gamma"], duration, self.cfg["discount_per"]).to(reward.dtype)

    def bootstrap_value(self, tensordict: TensorDictBase, next_z: torch.Tensor, next_zg: torch.Tensor | None) -> torch.Tensor:
        """The value of the next step in the TD target, ``[T, B, 1]``; ``tensordict`` is the time-major batch.

        A hook: skill learners bootstrap differently where a skill ends.
        """
        return self.next_value(next_z, next_zg)

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys, cfg, wm = self.tensor_keys, self.cfg, self.world_model
        td = tensordict if tensordict.batch_dims >= 2 else tensordict.unsqueeze(-1)
        td = td.reshape(-1, td.shape[-1]).transpose(0, 1)  # time-major [T, B]
        horizon = td.shape[0]
        obs, next_obs = td.get(keys.observation).float(), td.get(keys.next_observation).float()
        action = td.get(keys.action).float()
        if self.action_low is not None:
            action = 2 * (action - self.action_low) / (self.action_high - self.action_low) - 1
        reward = td.get(keys.reward).float()
        terminated = td.get(keys.terminated).float()
        goal = td.get(keys.goal).float() if wm.goal_dim else None
        zg = wm.encode_goal(goal)
        rho = cfg["rho"] ** torch.arange(horizon, device=obs.device, dtype=obs.dtype).reshape(horizon, 1)

        with torch.no_grad():
            next_z = wm.encode(next_obs)
            next_goal = td.get(keys.next_goal, None) if wm.goal_dim else None
            next_zg = wm.encode_goal(next_goal.float()) if next_goal is not None else None if zg is None else zg.detach()
            discount = self.discount(reward, td.get(keys.duration, None))
            td_target = reward + discount * (1 - terminated) * self.bootstrap_value(td, next_z, next_zg)

        z = wm.encode(obs[0])
        latents, consistency = [z], 0.0
        for t in range(horizon):
            z = wm.next(z, action[t])
            consistency = consistency + rho[t, 0] * F.mse_loss(z, next_z[t])
            latents.append(z)
        latents = torch.stack(latents)  # z_0 .. z_T; action t is taken in z_t
        zs = latents[:-1]
        reward_ce = wm.two_hot.cross_entropy(wm.reward_logits(zs, action, zg), reward)  # [T, B]
        q_logits = self._q(self.qvalue_network_params, zs, action, zg)  # [Q, T, B, bins]
        value_ce = wm.two_hot.cross_entropy(q_logits, td_target.expand(q_logits.shape[0], *td_target.shape))
        # deliberately kept: termination is predicted from (z_t, a_t), where the official head reads
        # z_{t+1}; the same information, and planning needs no extra latent step for it
        termination = F.binary_cross_entropy_with_logits(wm.termination_logit(zs, action), terminated) \
            if wm.termination is not None else torch.zeros((), device=obs.device)

        # policy over all T + 1 latents (official `update_pi(zs.detach())`), on detached latents and
        # the Q weights held fixed (none of their gradients recorded), so only the policy learns
        # from it; z_T is conditioned on the last next goal.
        # Deliberately kept: it is computed in the same pass as the model losses, so it sees the Q
        # before this step's update (the official updates the policy right after the model), which
        # saves a second forward pass and lags the policy by one step.
        z_pi = latents.detach()
        zg_pi = None if zg is None else torch.cat([zg, next_zg[-1:]]).detach()
        pi_action, log_pi = wm.pi(z_pi, zg_pi)
        q_pi = self._two_q(partial(self._q, self.qvalue_network_params, z_pi, pi_action, zg_pi, weight_grads=False),
                           z_pi.device).mean(0)
        self.update_value_scale(q_pi[0])
        rho_pi = cfg["rho"] ** torch.arange(horizon + 1, device=obs.device, dtype=obs.dtype)
        scale = self.value_scale.clamp_min(1.0)  # a no-op since the update clamps; guards older saved scales
        policy = ((cfg["entropy_coef"] * log_pi - q_pi / scale).mean((1, 2)) * rho_pi).mean()

        return TensorDict(
            {
                "loss_consistency": cfg["consistency_coef"] * consistency / horizon,
                "loss_reward": cfg["reward_coef"] * (reward_ce * rho).sum(0).mean() / horizon,
                "loss_value": cfg["value_coef"] * (value_ce * rho).sum(1).mean() / horizon,
                "loss_termination": cfg["termination_coef"] * termination,
                "loss_policy": policy,
                "value_scale": self.value_scale.detach().clone(),
                "td_target": td_target.mean().detach(),
            },
            batch_size=[],
        )


@contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """``module`` in eval mode for the block, then back in its own mode."""
    was_training = module.training
    module.train(False)
    try:
        yield
    finally:
        module.train(was_training)


def make_tdmpc2_optimizer(loss: TDMPC2Loss) -> torch.optim.Optimizer:
    """The world model's Adam: every parameter of the loss but the policy's, the encoders at
    ``lr * enc_lr_scale`` as in TD-MPC2 (the policy has its own, `make_tdmpc2_policy_optimizer`)."""
    cfg, wm = loss.cfg, loss.world_model
    encoders = [p for m in (wm.encoder, wm.goal_encoder) if m is not None for p in m.parameters()]
    skip = {id(p) for p in encoders} | {id(p) for p in wm.policy.parameters()}
    rest = [p for p in loss.parameters() if id(p) not in skip]
    return adam(
        [{"params": encoders, "lr": cfg["lr"] * cfg["enc_lr_scale"]}, {"params": rest, "lr": cfg["lr"]}],
        lr=cfg["lr"],
    )


def make_tdmpc2_policy_optimizer(loss: TDMPC2Loss) -> torch.optim.Optimizer:
    """The policy prior's own Adam, as the official ``pi_optim``: ``lr``, ``eps=1e-5``."""
    return adam(loss.world_model.policy.parameters(), lr=loss.cfg["lr"], eps=1e-5)


def tdmpc2_update(
    losses: TensorDictBase,
    optimizer: torch.optim.Optimizer,
    policy_optimizer: torch.optim.Optimizer,
    max_grad_norm: float,
) -> dict[str, torch.Tensor] | None:
    """One TD-MPC2 step on the output of `TDMPC2Loss`: both Adams, each clipping its own gradients.

    The ``loss_*`` entries are summed and back-propagated once (the policy term reaches only the
    policy, the others never reach it); the world model's parameters are clipped to
    ``max_grad_norm`` and stepped by ``optimizer``, the policy's clipped to ``max_grad_norm`` on
    their own and stepped by ``policy_optimizer``. As `gradient_steps` does, a step whose loss or
    either gradient norm is not finite is not applied (neither optimiser moves; the gradients are
    cleared): then it returns None, else the norms before clipping (``grad_norm``, ``policy_grad_norm``).
    """
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    optimizer.zero_grad(set_to_none=True)
    policy_optimizer.zero_grad(set_to_none=True)
    total.backward()
    params = lambda opt: [p for group in opt.param_groups for p in group["params"]]  # noqa: E731
    norms = finite_clipped_norms([params(optimizer), params(policy_optimizer)], max_grad_norm, total)
    if norms is None:
        optimizer.zero_grad(set_to_none=True)
        policy_optimizer.zero_grad(set_to_none=True)
        return None
    grad_norm, policy_grad_norm = norms
    optimizer.step()
    policy_optimizer.step()
    return {"grad_norm": grad_norm, "policy_grad_norm": policy_grad_norm}
