"""`SPlaTESLevel`: temporally extended, predictable, diverse skills (Gürtler & Martius, 2025)."""
from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Composite, Unbounded

from torchrl_layered.keys import OPTION_INDEX, TRAJ_IDS, TRANSITION_STATE
from torchrl_layered.levels.skill import SkillLevel
from torchrl_layered.levels.tdmpc2 import HorizonPrefix
from torchrl_layered.levels.validation import as_slice
from torchrl_layered.modules.splates import SPlaTESWorldModel
from torchrl_layered.objectives.skill_rewards import SPlaTESReward
from torchrl_layered.objectives.splates import SPlaTESLoss


def skill_phases(step: torch.Tensor, control_interval: int, horizon: int) -> tuple[torch.Tensor, list[int]]:
    """Which instances' skills still run at each step ahead: ``(order, counts)``.

    ``step [B, 1]`` is the step within each skill now. ``order [B]`` sorts the instances by it,
    so that the ``counts[t]`` instances whose skill still runs ``t`` steps ahead
    (``step + t < control_interval``), for ``t`` in ``0..horizon``, are ``order[:counts[t]]``.
    One host read per plan: the planner's iterations reuse it.
    """
    ahead = torch.arange(horizon + 1, device=step.device)
    counts = (step.reshape(-1, 1) + ahead < control_interval).sum(0).tolist()
    return step.reshape(-1).argsort(stable=True), counts


def _rows(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """``x[rows]`` (all of ``x`` for None), keeping a broadcast second dim a broadcast view, so
    that `mlp_on` still computes its first layer once per instance."""
    if rows is None:
        return x
    if x.stride(1) == 0:
        return x[rows, :1].expand(rows.shape[0], *x.shape[1:])
    return x.index_select(0, rows)


class SPlaTESLevel(SkillLevel):
    """Skills in ``[-1, 1]^skill_dim`` of ``control_interval`` steps, rewarded where they end.

    The reward (`SPlaTESLoss`) is the contrastive log-density of the skill's end under the
    parent's predictor (e.g. a `PlannerLevel`'s `RewardPredictor`, which learns where skills
    end from its own transitions), relative to the skill's start: the planner above gets
    skills it can predict, that differ from each other, and that go somewhere.

    Per instance the level carries (``get_state_spec``) the observation where the current
    skill started and the step ``k`` within it; both are stored with each transition, so the
    reward is recomputed at sample time under the parent's current model. The TD-MPC2 agent
    sees ``[k / CI, s_start, skill]`` in reward, Q and policy (`SPlaTESWorldModel`); its MPPI
    planning stops accumulating rewards where the skill ends and then bootstraps from the
    skill-averaged value ``V_avg`` at the converter's estimate of the new start.

    Args:
        skill_dim: size of the skill.
        config: the TD-MPC2 config (`get_default_tdmpc2_config`).
        control_interval: ``CI``, steps per skill (fixed-length skills).
        reward: the reward's settings, a `SPlaTESReward` (or a dict); its fields (``fixed_std``,
            ``potential_diff_reward``, ...) may also be given as keyword arguments. The
            symmetry-breaking prior's duration counts this level's transitions.
        hidden_slice: observation entries the skill agent does not see (``slice`` or
            ``(start, stop)``), e.g. the desired goal, so that skills do not depend on the task;
            the reward still encodes the whole observation with the parent's encoder.
        raw_conditioning: feed ``[k / CI, s_start, skill]`` to Q and policy, and ``[s_start,
            skill]`` to the reward, as they are (the reference's heads) instead of embedded by
            a goal encoder: smaller first layers, learning about a fifth faster (see the
            benchmarks' maze results for how the skills came out).
        **kwargs: of `TDMPC2Level` (``warm_up_steps``, ``update_interval``, ``use_policy``, ...).
    """

    reward_settings = SPlaTESReward

    def __init__(
        self,
        skill_dim: int = 2,
        config: dict[str, Any] | None = None,
        *,
        control_interval: int = 10,
        reward: SPlaTESReward | dict[str, Any] | None = None,
        warm_up_steps: int = 1000,
        hidden_slice: slice | tuple[int, int] | None = None,
        raw_conditioning: bool = False,
        **kwargs,
    ):
        if not isinstance(control_interval, int) or control_interval < 1:
            raise ValueError(f"SPlaTESLevel needs fixed-length skills: an int control_interval >= 1; got {control_interval!r}")
        if kwargs.get("desired_goal_slice") is not None or kwargs.get("use_her") or kwargs.get("input_as_goal"):
            raise ValueError("SPlaTESLevel conditions on its skill itself; it takes no desired_goal_slice, use_her or input_as_goal")
        if not isinstance(raw_conditioning, bool):
            raise TypeError(f"SPlaTESLevel raw_conditioning must be a bool; got {raw_conditioning!r}")
        super().__init__(skill_dim, config, reward=reward, control_interval=control_interval,
                         warm_up_steps=warm_up_steps, **kwargs)
        self.hidden_slice = as_slice(hidden_slice, "hidden_slice")
        self.raw_conditioning = raw_conditioning

    # ---------------------------------------------------------------- build
    @property
    def start_dim(self) -> int:
        """Size of the parent's encoding of a skill's start."""
        return self.skill_model.latent_state_dim

    def _model_dims(self, obs_dim: int, input_dim: int) -> tuple[int, int, int]:
        hidden = len(range(*self.hidden_slice.indices(obs_dim))) if self.hidden_slice is not None else 0
        return obs_dim - hidden, 1 + self.start_dim + self.skill_dim, 0

    def agent_observation(self, obs: torch.Tensor) -> torch.Tensor:
        """What the TD-MPC2 agent sees: the observation without ``hidden_slice``."""
        if self.hidden_slice is None:
            return obs
        keep = torch.ones(obs.shape[-1], dtype=torch.bool, device=obs.device)
        keep[self.hidden_slice] = False
        return obs[..., keep]

    def make_world_model(self, obs_dim: int, action_dim: int, goal_dim: int) -> SPlaTESWorldModel:
        return SPlaTESWorldModel(obs_dim, action_dim, self.cfg, self.skill_dim, self.start_dim, self.raw_conditioning)

    def make_loss(self) -> SPlaTESLoss:
        return SPlaTESLoss(self.world_model, self.skill_model, self.cfg, control_interval=self.control_interval,
                           reward=self.reward, hold_switch=self.move_switch)

    def get_state_spec(self) -> Composite | None:
        planner = self._modules.get("planner")
        if planner is None:
            return None
        device = planner.low.device
        return Composite(
            planner=planner.state_spec(),
            skill_start=Unbounded(self.observation_spec.shape, dtype=torch.float32, device=device),
            skill_step=Unbounded((1,), dtype=torch.long, device=device),
        )

    # ------------------------------------------------------------------ act
    def get_action(self, tensordict: TensorDictBase) -> torch.Tensor:
        obs = tensordict.get("observation").float()
        skill = tensordict.get("level_input").float()
        step = (tensordict.get("steps") - 1).clamp(0, self.control_interval - 1)
        start = torch.where(step == 0, obs, tensordict.get(("state", "skill_start")).float())
        tensordict.set(("state", "skill_start"), start)
        tensordict.set(("state", "skill_step"), step)
        n = obs.shape[0]
        deterministic = self.deterministic
        if not deterministic and self.env_steps < self.warm_up_steps:
            return self._from_unit(torch.rand(n, self.world_model.action_dim, device=obs.device) * 2 - 1)
        wm = self.world_model
        with torch.no_grad():
            start_state, _ = self.skill_model.encode(start)
            z = wm.encode(self.agent_observation(obs))
            if self.use_policy:
                zg = wm.encode_goal(wm.conditioning(step.float() / self.control_interval, start_state, skill))
                action, _ = wm.pi(z, zg, deterministic=deterministic)
                return self._from_unit(action)
            horizon = self.cfg["horizon"]
            ahead = step[:, None] + torch.arange(horizon + 1, device=obs.device)[:, None]  # [B, H+1, 1]
            # policy-prior rollouts keep the skill and wrap k, as if the same skill were chosen again
            progress = (ahead % self.control_interval).float() / self.control_interval
            goals = wm.encode_goal(wm.conditioning(
                progress, start_state[:, None].expand(-1, horizon + 1, -1), skill[:, None].expand(-1, horizon + 1, -1)))
            generator = torch.Generator(device=obs.device).manual_seed(0) if deterministic else None
            phases = skill_phases(step, self.control_interval, horizon)  # once per plan, not per iteration
            prior = self.skill_policy_trajectories(z, goals)
            # the prior's rollouts join every iteration unchanged: their horizon is imagined once per plan
            known = None if prior is None else self.skill_horizon_prefix(z, goals, self.planner.clip(prior), phases)
            result = self.planner(
                lambda actions: self.estimate_skill_value(z, goals, step, actions, phases, known=known),
                state=tensordict.get(("state", "planner")),
                extra_samples=prior,
                generator=generator,
            )
        tensordict.set(("state", "planner"), result.state)
        action = result.action[:, 0]
        if not deterministic:
            action = action + result.std[:, 0] * torch.randn_like(action)
        return self._from_unit(action)

    @torch.no_grad()
    def estimate_skill_value(self, z: torch.Tensor, goals: torch.Tensor, step: torch.Tensor,
                             actions: torch.Tensor, phases: tuple[torch.Tensor, list[int]] | None = None,
                             known: HorizonPrefix | None = None) -> torch.Tensor:
        """Return of ``actions [B, N, H, A]`` until the skill ends, then ``V_avg``; ``[B, N]``.

        ``z [B, L]`` the latent now, ``goals [B, H+1, G]`` the conditioning ``[k / CI, s_start,
        skill]`` per step ahead (embedded unless ``raw_conditioning``), ``step [B, 1]`` the step
        within the skill now. Past the skill's last step the
        latent stops (the next skill's actions are not this plan's), and the value there is
        the skill-averaged ``V_avg`` at the converter's estimate of the new start; a skill
        still running at the horizon bootstraps with its Q.

        Each head runs only on the instances whose estimate uses it (`skill_phases`; pass
        ``phases`` to compute them once per plan rather than once per call): a skill that
        ends within the horizon skips the steps after its end and its Q, one that runs past
        it skips ``V_avg``. ``known``: the `skill_horizon_prefix` of the last ``M`` candidates
        where those join every call unchanged (the policy prior's rollouts), as in
        `TDMPC2Level.estimate_value`: only their bootstrap is computed again.
        """
        if known is not None:
            known.check(actions, f"{type(self).__name__}.estimate_skill_value")
        with self.planning_precision(z.device):
            return self._skill_return(z, goals, step, actions, phases, known).float()

    @torch.no_grad()
    def skill_horizon_prefix(self, z: torch.Tensor, goals: torch.Tensor, actions: torch.Tensor,
                             phases: tuple[torch.Tensor, list[int]]) -> HorizonPrefix:
        """The deterministic part of `estimate_skill_value` for ``actions [B, M, H, A]`` (the
        rewards, survival and latents up to each skill's end), in the planning precision."""
        with self.planning_precision(z.device):
            return self._skill_prefix(z, goals, actions, phases)

    def _skill_prefix(self, z, goals, actions, phases) -> HorizonPrefix:
        b, n, h, _ = actions.shape
        wm = self.world_model
        order, counts = phases
        z = z[:, None].expand(b, n, z.shape[-1])
        total = torch.zeros(b, n, 1, device=z.device, dtype=z.dtype)
        weight = torch.ones_like(total)
        gamma = self.planning_gamma
        for t in range(h):
            if counts[t] == 0:
                break
            rows = None if counts[t] == b else order[: counts[t]]
            zt, a = _rows(z, rows), _rows(actions[:, :, t], rows)
            zg = _rows(goals[:, None, t].expand(b, n, goals.shape[-1]), rows)
            reward = wm.two_hot.decode(wm.reward_logits(zt, a, zg))
            survive = gamma * (1 - torch.sigmoid(wm.termination_logit(zt, a)))
            if rows is None:
                total, weight, z = total + weight * reward, weight * survive, wm.next(zt, a)
            else:
                w = weight.index_select(0, rows)
                total = total.index_add(0, rows, (w * reward).to(total.dtype))
                weight = weight.index_copy(0, rows, (w * survive).to(weight.dtype))
                z = z.index_copy(0, rows, wm.next(zt, a).to(z.dtype))  # autocast may give bfloat16
        return HorizonPrefix(total, weight, z)

    def _skill_return(self, z, goals, step, actions, phases, known=None) -> torch.Tensor:
        """`estimate_skill_value`'s computation, in the caller's precision."""
        b, n, h, _ = actions.shape
        wm = self.world_model
        order, counts = phases if phases is not None else skill_phases(step, self.control_interval, h)
        if known is None:
            total, weight, z = self._skill_prefix(z, goals, actions, (order, counts))
        else:
            fresh = self._skill_prefix(z, goals, actions[:, : n - known.total.shape[1]], (order, counts))
            total, weight, z = (torch.cat([x, y.to(x.dtype)], 1) for x, y in zip(fresh, known))
        running = counts[h]  # instances whose skill still runs at the horizon come first in ``order``
        values = []
        if running:
            rows = None if running == b else order[:running]
            zt, zg = _rows(z, rows), _rows(goals[:, None, h].expand(b, n, goals.shape[-1]), rows)
            a, _ = wm.pi(zt, zg)
            values.append(wm.avg_q(zt, a, zg))
        if running < b:
            zt = _rows(z, None if running == 0 else order[running:])
            values.append(wm.avg_value_of(zt, wm.to_start(zt)))
        value = values[0] if len(values) == 1 else torch.cat(values).index_select(0, order.argsort())
        return (total + weight * value).squeeze(-1)

    @torch.no_grad()
    def skill_policy_trajectories(self, z: torch.Tensor, goals: torch.Tensor) -> torch.Tensor | None:
        """``[B, num_pi_trajs, H, A]`` action sequences of the policy prior rolled through the model."""
        m = self.cfg["num_pi_trajs"]
        if m <= 0:
            return None
        b = z.shape[0]
        z = z[:, None].expand(b, m, z.shape[-1])
        actions = []
        for t in range(self.cfg["horizon"]):
            a, _ = self.world_model.pi(z, goals[:, None, t].expand(b, m, goals.shape[-1]))
            actions.append(a)
            if t + 1 < self.cfg["horizon"]:  # the latent after the last action is not used
                z = self.world_model.next(z, a)
        return torch.stack(actions, 2)

    # ---------------------------------------------------------------- learn
    def extend(self, transitions: TensorDictBase) -> None:
        if transitions.get(TRAJ_IDS, None) is None:
            raise KeyError(
                f"SPlaTESLevel needs episode ids {TRAJ_IDS} in its transitions to sample sub-trajectories: "
                "collect with a torchrl Collector (it writes them)"
            )
        state = transitions.get(TRANSITION_STATE, None)
        if state is None:
            raise KeyError("SPlaTESLevel needs its level state (skill start and step) in its transitions: "
                           "build them with Hierarchy.transitions(batch) / Hierarchy.extend(batch)")
        data = transitions.select("observation", "action", "level_input", OPTION_INDEX, TRAJ_IDS, "next")
        data.set("action", self._to_unit(data.get("action")))
        data.set("skill_start", state.get("skill_start"))
        data.set("skill_step", state.get("skill_step"))
        self.store(data)

    def sample(self) -> TensorDictBase:
        """A ``[B, H]`` batch for `SPlaTESLoss`: observations, actions, skills, skill starts and steps."""
        cfg = self.cfg
        data = self.sample_buffer().reshape(cfg["batch_size"], cfg["horizon"])
        obs, next_obs = data.get("observation").float(), data.get(("next", "observation")).float()
        return TensorDict(
            {
                "observation": self.agent_observation(obs),
                "parent_observation": obs,
                "action": data.get("action"),
                "skill": data.get("level_input").float(),
                "skill_start": data.get("skill_start").float(),
                "skill_step": data.get("skill_step"),
                "next": {
                    "observation": self.agent_observation(next_obs),
                    "parent_observation": next_obs,
                    "reward": data.get(("next", "reward")).float(),
                    "terminated": data.get(("next", "terminated")),
                },
            },
            batch_size=data.shape,
            device=data.device,
        )
