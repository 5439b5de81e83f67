"""`TDMPC2Loss`: the TD-MPC2 objective (Hansen et al., ICLR 2024) as a TorchRL `LossModule`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import dispatch
from tensordict.utils import NestedKey
from torchrl.data import Bounded
from torchrl.objectives import LossModule

from torchrl_layered.modules.tdmpc2 import QEnsemble, TDMPC2WorldModel
from torchrl_layered.tdmpc2.config import resolve_tdmpc2_config


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
      change the bootstrap term with `bootstrap_value`);
    - ``loss_termination``: binary cross-entropy of the termination head;
    - ``loss_policy``: ``entropy_coef * log pi - Q / scale`` on detached latents and Q weights
      (``scale`` is a running 5-95 percentile range of Q).

    The ``loss_*`` entries are already weighted by the config's coefficients: sum them. The
    target Q ensemble lives in ``target_qvalue_network_params``: update it with
    ``SoftUpdate(loss, tau=config["tau"])``.

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

    def _q(self, params: TensorDictParams, z, a, zg) -> torch.Tensor:
        with params.to_module(self.qvalue_network):
            return self.world_model.q_logits(z, a, zg)

    def _two_q(self, logits: torch.Tensor) -> torch.Tensor:
        """Two random members of the ensemble, decoded: ``[2, *, 1]``."""
        index = torch.randperm(logits.shape[0], device=logits.device)[:2]
        return self.world_model.two_hot.decode(logits[index])

    @torch.no_grad()
    def next_value(self, next_z, zg=None) -> torch.Tensor:
        """``min(two random target Qs)(z', pi(z'))``, ``[*, 1]``."""
        next_action, _ = self.world_model.pi(next_z, zg)
        return self._two_q(self._q(self.target_qvalue_network_params, next_z, next_action, zg)).min(0).values

    @torch.no_grad()
    def value_target(self, next_z, reward, terminated, zg=None) -> torch.Tensor:
        """``r + gamma * (1 - terminated) * min(two random target Qs)(z', pi(z'))``."""
        return reward + self.cfg["discount"] * (1 - terminated) * self.next_value(next_z, zg)

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
            td_target = reward + cfg["discount"] * (1 - terminated) * self.bootstrap_value(td, next_z, next_zg)

        z = wm.encode(obs[0])
        latents, consistency = [], 0.0
        for t in range(horizon):
            latents.append(z)
            z = wm.next(z, action[t])
            consistency = consistency + rho[t, 0] * F.mse_loss(z, next_z[t])
        latents = torch.stack(latents)  # z_t, the latent in which action t is taken
        reward_ce = wm.two_hot.cross_entropy(wm.reward_logits(latents, action, zg), reward)  # [T, B]
        q_logits = self._q(self.qvalue_network_params, latents, action, zg)  # [Q, T, B, bins]
        value_ce = wm.two_hot.cross_entropy(q_logits, td_target.expand(q_logits.shape[0], *td_target.shape))
        termination = F.binary_cross_entropy_with_logits(wm.termination_logit(latents, action), terminated) \
            if wm.termination is not None else torch.zeros((), device=obs.device)

        # policy: detached latents and detached Q weights, so only the policy learns from it
        z_pi = latents.detach()
        zg_pi = None if zg is None else zg.detach()
        pi_action, log_prob = wm.pi(z_pi, zg_pi)
        q_pi = self._two_q(self._q(self.qvalue_network_params.detach(), z_pi, pi_action, zg_pi)).mean(0)
        with torch.no_grad():
            flat_q = q_pi[0].reshape(-1)
            spread = torch.quantile(flat_q, 0.95) - torch.quantile(flat_q, 0.05)
            self.value_scale.lerp_(spread, cfg["tau"])
        policy = ((cfg["entropy_coef"] * log_prob - q_pi / self.value_scale.clamp_min(1.0)).mean(1) * rho).mean()

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


def make_tdmpc2_optimizer(loss: TDMPC2Loss) -> torch.optim.Optimizer:
    """Adam over the loss's parameters, the encoders at ``lr * enc_lr_scale`` as in TD-MPC2."""
    cfg, wm = loss.cfg, loss.world_model
    encoders = [p for m in (wm.encoder, wm.goal_encoder) if m is not None for p in m.parameters()]
    encoder_ids = {id(p) for p in encoders}
    rest = [p for p in loss.parameters() if id(p) not in encoder_ids]
    return torch.optim.Adam(
        [{"params": encoders, "lr": cfg["lr"] * cfg["enc_lr_scale"]}, {"params": rest, "lr": cfg["lr"]}],
        lr=cfg["lr"],
    )
