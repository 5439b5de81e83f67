"""`TDMPC2Level`: a TD-MPC2 agent as a level, planning with MPPI batched over instances."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded, Composite, LazyTensorStorage, TensorDictReplayBuffer, TensorSpec

from torchrl_layered.samplers import fragmented_slice_sampler
from torchrl_layered.keys import NEXT_DURATION, OPTION_INDEX, TRAJ_IDS
from torchrl_layered.levels.base import Level
from torchrl_layered.levels.validation import as_slice
from torchrl_layered.modules.compiled import compiled_attribute
from torchrl_layered.modules.precision import autocast_dtype, autocast_to
from torchrl_layered.modules.tdmpc2 import TDMPC2WorldModel
from torchrl_layered.objectives.discount import planning_discount
from torchrl_layered.objectives.soft_update import ForeachSoftUpdate
from torchrl_layered.objectives.tdmpc2 import (
    TDMPC2Loss,
    make_tdmpc2_optimizer,
    make_tdmpc2_policy_optimizer,
    tdmpc2_update,
)
from torchrl_layered.planners import MPPIPlanner
from torchrl_layered.objectives.tdmpc2_config import resolve_tdmpc2_config

#: ``reward_fn(achieved_goal=[*, g], desired_goal=[*, g]) -> [*]``, batched, for hindsight relabelling.
GoalRewardFn = Callable[..., torch.Tensor]


class HorizonPrefix(NamedTuple):
    """What a planning estimate imagines over the horizon for ``[B, M]`` candidates: the discounted
    reward so far ``total [B, M, 1]``, the discount and survival weight of the bootstrap ``weight
    [B, M, 1]``, and the latent reached ``z [B, M, L]``."""

    total: torch.Tensor
    weight: torch.Tensor
    z: torch.Tensor

    def check(self, actions: torch.Tensor, owner: str) -> None:
        """Refuses a prefix that cannot stand for the last candidates of ``actions [B, N, H, A]``:
        another batch of instances, or more candidates than given."""
        b, m = self.total.shape[:2]
        if b != actions.shape[0] or not 0 < m <= actions.shape[1]:
            raise ValueError(f"{owner}: the known prefix covers {m} candidates of {b} instances; it stands for the "
                             f"last ones of the {actions.shape[1]} candidates of {actions.shape[0]} instances given")


class TDMPC2Level(Level):
    """TD-MPC2 (Hansen et al., 2024): a latent world model, MPPI planning, and a policy prior.

    Acting: uniform random actions for ``warm_up_steps`` env steps, then MPPI over
    the learned model (policy-prior trajectories mixed in, a warm start per instance that
    restarts with each episode), or the policy prior alone with ``use_policy=True``. Eval
    mode plans without exploration noise. The world model acts without dropout in either
    mode (the official agent acts under ``model.eval()``): only learning turns it on. Its
    transitions go to a TorchRL replay buffer with a `SliceSampler` over sub-trajectories of
    ``horizon`` transitions; it learns with `TDMPC2Loss` every ``update_interval`` transitions
    after the warm-up, the world model and the policy each with its own Adam and gradient
    clipping (`tdmpc2_update`). The config's ``gamma`` is per env step: an option bootstraps
    with ``gamma ** duration`` and a planned step is discounted by ``gamma ** mean
    duration`` (`objectives.discount`; config ``discount_per="option"`` for one per option).

    Goal-based mode (``desired_goal_slice``): the desired goal part of the observation is
    embedded by its own encoder and conditions reward, Q and policy only (with
    ``input_as_goal`` the parent's option is that goal instead, as a skill); with ``use_her``
    each sampled sub-trajectory is duplicated ``her_goals`` times (so ``her_goals / (her_goals
    + 1)`` of the rows are relabelled, HER's ``future`` ratio ``k``), the desired goal of each
    step drawn uniformly from the achieved goals of the same step or a later one of the same
    episode as stored in the buffer (HER's ``future`` strategy: anywhere in the rest of the
    episode, not only in the sampled window), and rewards recomputed by
    ``reward_fn(achieved_goal=..., desired_goal=...)`` (batched).

    Args:
        config: a TD-MPC2 config (`torchrl_layered.tdmpc2.get_default_tdmpc2_config`).
        desired_goal_slice, achieved_goal_slice: where the goals lie in the observation
            (``slice`` or ``(start, stop)``; see `torchrl_layered.envs.make.goal_slices`).
        use_her, her_goals, reward_fn: hindsight relabelling (goal-based mode only).
        warm_up_steps: env steps (of its stored transitions) of random actions before planning and learning.
        update_interval, num_updates: ``num_updates`` updates every ``update_interval`` transitions.
        learning_steps: stop learning once the level's stored transitions cover this many env
            steps (it goes on acting with what it learned); None: never stop.
        use_policy: act with the policy prior instead of planning.
        input_as_goal: below a parent, condition reward, Q and policy on the level input
            through the goal encoder (a skill or a commanded goal) instead of appending it
            to the observation.
    """

    supported_action_specs = (Bounded,)
    layeredrl_spellings = {"tdmpc2_config": "config"}
    layeredrl_hints = {"goal_based": "goal mode follows from desired_goal_slice= and achieved_goal_slice=; give those"}

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        desired_goal_slice: slice | tuple[int, int] | None = None,
        achieved_goal_slice: slice | tuple[int, int] | None = None,
        use_her: bool = False,
        her_goals: int = 2,
        reward_fn: GoalRewardFn | None = None,
        warm_up_steps: int = 2000,
        update_interval: int = 1,
        num_updates: int = 1,
        learning_steps: int | None = None,
        use_policy: bool = False,
        input_as_goal: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.cfg = resolve_tdmpc2_config(config)
        if input_as_goal and desired_goal_slice is not None:
            raise ValueError("TDMPC2Level: give either desired_goal_slice or input_as_goal=True, not both (one goal)")
        self.input_as_goal = input_as_goal
        self.desired_goal_slice = as_slice(desired_goal_slice, "desired_goal_slice")
        self.achieved_goal_slice = as_slice(achieved_goal_slice, "achieved_goal_slice")
        if use_her and (self.desired_goal_slice is None or self.achieved_goal_slice is None or reward_fn is None):
            raise ValueError("TDMPC2Level(use_her=True) needs desired_goal_slice, achieved_goal_slice and reward_fn")
        self.use_her, self.her_goals, self.reward_fn = use_her, her_goals, reward_fn
        self.set_update_schedule(warm_up_steps=warm_up_steps, update_interval=update_interval, num_updates=num_updates,
                                 learning_steps=learning_steps)
        self.use_policy = use_policy or not self.cfg["mpc"]

    # ---------------------------------------------------------------- build
    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec, parent: Level | None = None) -> None:
        super().initialize(observation_spec, action_spec, parent)
        cfg = self.cfg
        obs_dim = observation_spec.shape[-1]
        input_spec = self.get_input_spec()
        input_dim = torch.Size(input_spec.shape).numel() if parent is not None and input_spec is not None else 0
        model_obs_dim, goal_dim, self.input_dim = self._model_dims(obs_dim, input_dim)
        action_dim = action_spec.shape[-1]
        self.world_model = self.make_world_model(model_obs_dim, action_dim, goal_dim)
        self.loss = self.make_loss()
        self.target_updater = ForeachSoftUpdate(self.loss, tau=cfg["tau"])
        self.optimizer = make_tdmpc2_optimizer(self.loss)
        self.policy_optimizer = make_tdmpc2_policy_optimizer(self.loss)
        unit = Bounded(-1.0, 1.0, shape=(action_dim,), device=action_spec.device)
        # num_samples counts every candidate, the policy-prior trajectories included (as officially)
        self.planner = MPPIPlanner(
            unit, cfg["horizon"], cfg["num_samples"] - cfg["num_pi_trajs"], cfg["num_iterations"], cfg["num_elites"],
            temperature=cfg["temperature"], min_std=cfg["min_std"], max_std=cfg["max_std"],
            initial_std=cfg["max_std"], result_mode="sample",
        )
        self.replay_buffer = TensorDictReplayBuffer(
            storage=LazyTensorStorage(int(cfg["buffer_size"]), device="auto"),
            sampler=fragmented_slice_sampler(cfg["horizon"], traj_key=TRAJ_IDS, step_key=OPTION_INDEX),
            batch_size=cfg["batch_size"] * cfg["horizon"],
        )
        self._episode_index = None
        self._update_in_out_keys()
        self.train(self.training)  # the world model acts in eval mode

    def train(self, mode: bool = True) -> TDMPC2Level:
        """Sets the mode, but keeps the world model in eval mode: acting and planning never use
        dropout (official ``act`` runs under ``model.eval()``); `learn` turns it on while it steps."""
        super().train(mode)
        world_model = self._modules.get("world_model")
        if world_model is not None:
            world_model.eval()
        return self

    def _model_dims(self, obs_dim: int, input_dim: int) -> tuple[int, int, int]:
        """``(model observation size, goal size, appended input size)`` for a mapped observation of
        ``obs_dim`` entries and a level input of ``input_dim`` entries (0 for a top level)."""
        if self.input_as_goal:
            return obs_dim, input_dim, 0
        goal_dim = 0
        if self.desired_goal_slice is not None:
            goal_dim = len(range(*self.desired_goal_slice.indices(obs_dim)))
        # below a parent the level sees its option too
        return obs_dim - goal_dim + input_dim, goal_dim, input_dim

    def make_world_model(self, obs_dim: int, action_dim: int, goal_dim: int) -> TDMPC2WorldModel:
        """Builds the networks (a subclass swaps in its own world model here)."""
        return TDMPC2WorldModel(obs_dim, action_dim, self.cfg, goal_dim)

    def make_loss(self) -> TDMPC2Loss:
        """Builds the loss over ``self.world_model`` (a subclass swaps in its own objective here)."""
        return TDMPC2Loss(self.world_model, self.cfg)

    def get_state_spec(self) -> Composite | None:
        planner = self._modules.get("planner")
        return None if planner is None else Composite(planner=planner.state_spec())

    # --------------------------------------------------------- observations
    def split(self, obs: torch.Tensor, level_input: torch.Tensor | None = None):
        """``(model observation, desired goal or None)``: the goal is cut out, the level input appended."""
        goal = None
        if self.input_as_goal and level_input is not None:
            goal = level_input.reshape(*obs.shape[:-1], -1)
        if self.desired_goal_slice is not None:
            goal = obs[..., self.desired_goal_slice]
            keep = torch.ones(obs.shape[-1], dtype=torch.bool, device=obs.device)
            keep[self.desired_goal_slice] = False
            obs = obs[..., keep]
        if self.input_dim:
            obs = torch.cat([obs, level_input.reshape(*obs.shape[:-1], -1).float()], -1)
        return obs.float(), None if goal is None else goal.float()

    @property
    def planning_gamma(self) -> float:
        """The discount per planned step: ``gamma ** mean_duration`` (`objectives.discount`)."""
        return planning_discount(self.cfg["gamma"], self.mean_duration, self.cfg["discount_per"])

    def _to_unit(self, action: torch.Tensor) -> torch.Tensor:
        low, high = self.action_spec.space.low.to(action.device), self.action_spec.space.high.to(action.device)
        return 2 * (action - low) / (high - low) - 1

    def _from_unit(self, action: torch.Tensor) -> torch.Tensor:
        low, high = self.action_spec.space.low.to(action.device), self.action_spec.space.high.to(action.device)
        return low + 0.5 * (action.clamp(-1, 1) + 1) * (high - low)

    # ------------------------------------------------------------------ act
    def get_action(self, tensordict: TensorDictBase) -> torch.Tensor:
        obs, goal = self.split(tensordict.get("observation"), tensordict.get("level_input", None))
        n = obs.shape[0]
        deterministic = self.deterministic
        if not deterministic and not self.warmed_up:
            return self._from_unit(torch.rand(n, self.world_model.action_dim, device=obs.device) * 2 - 1)
        with torch.no_grad():
            z = self.world_model.encode(obs)
            zg = self.world_model.encode_goal(goal)
            if self.use_policy:
                action, _ = self.world_model.pi(z, zg, deterministic=deterministic)
                return self._from_unit(action)
            generator = torch.Generator(device=obs.device).manual_seed(0) if deterministic else None
            gamma = torch.tensor(self.planning_gamma, dtype=z.dtype, device=z.device)  # once per plan
            prior = self.policy_trajectories(z, zg)
            # the prior's rollouts join every iteration unchanged: their horizon is imagined once per plan
            known = None if prior is None else self.horizon_prefix(z, zg, self.planner.clip(prior), gamma)
            result = self.planner(
                lambda actions: self.estimate_value(z, zg, actions, gamma, known=known),
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
    def estimate_value(self, z: torch.Tensor, zg: torch.Tensor | None, actions: torch.Tensor,
                       gamma: torch.Tensor | None = None, known: HorizonPrefix | None = None) -> torch.Tensor:
        """Discounted, termination-aware return of ``actions [B, N, H, A]`` from latents ``z [B, L]``, ``[B, N]``.

        ``known``: the `horizon_prefix` of the last ``M`` candidates, when those are known
        action sequences that join every call (the policy prior's rollouts, which the planner
        appends to each iteration's samples): their rewards, terminations and latents over the
        horizon are deterministic, so only the bootstrap (a fresh policy action and a fresh
        pair of Qs, as for every candidate) is computed again. The returns equal those
        computed without it.

        With ``compile`` in the config the rollout runs compiled (`CompiledOnUse`: at the first
        plan, eager with a warning where compiling fails); the discount goes in as a tensor, so
        a changing mean option duration does not recompile it (``gamma``: the discount per
        planned step, ``planning_gamma`` if None). With ``planning_dtype`` "bfloat16" it runs
        under autocast (`modules.precision`); the estimate is float32.
        """
        if gamma is None:
            gamma = torch.tensor(self.planning_gamma, dtype=z.dtype, device=z.device)
        if known is not None:
            known.check(actions, f"{type(self).__name__}.estimate_value")
        rollout = self._discounted_return
        if self.cfg["compile"]:
            rollout = compiled_attribute(self, "_compiled_return", rollout, "TDMPC2Level planning estimate")
        with self.planning_precision(z.device):
            return rollout(z, zg, actions, gamma, known).float()

    def planning_precision(self, device: torch.device):
        """The context planning estimates run in: autocast to the config's ``planning_dtype``
        (`modules.precision`), a no-op for float32."""
        return autocast_to(autocast_dtype(self.cfg["planning_dtype"], type(self).__name__), device)

    @torch.no_grad()
    def horizon_prefix(self, z: torch.Tensor, zg: torch.Tensor | None, actions: torch.Tensor,
                       gamma: torch.Tensor) -> HorizonPrefix:
        """The deterministic part of `estimate_value` for ``actions [B, M, H, A]``, in the planning
        precision: pass it as ``known`` where these sequences are the last ``M`` candidates."""
        with self.planning_precision(z.device):
            return self._rollout_prefix(z, zg, actions, gamma)

    def _rollout_prefix(self, z: torch.Tensor, zg: torch.Tensor | None, actions: torch.Tensor,
                        gamma: torch.Tensor) -> HorizonPrefix:
        b, n, h, _ = actions.shape
        wm = self.world_model
        z = z[:, None].expand(b, n, z.shape[-1])
        zg = None if zg is None else zg[:, None].expand(b, n, zg.shape[-1])
        total = torch.zeros(b, n, 1, device=z.device, dtype=z.dtype)
        weight = torch.ones_like(total)
        for t in range(h):
            a = actions[:, :, t]
            total = total + weight * wm.two_hot.decode(wm.reward_logits(z, a, zg))
            weight = weight * gamma * (1 - torch.sigmoid(wm.termination_logit(z, a)))
            z = wm.next(z, a)
        return HorizonPrefix(total, weight, z)

    def _discounted_return(self, z: torch.Tensor, zg: torch.Tensor | None, actions: torch.Tensor,
                           gamma: torch.Tensor, known: HorizonPrefix | None = None) -> torch.Tensor:
        b, n = actions.shape[:2]
        if known is None:
            total, weight, last = self._rollout_prefix(z, zg, actions, gamma)
        else:
            fresh = self._rollout_prefix(z, zg, actions[:, : n - known.total.shape[1]], gamma)
            total, weight, last = (torch.cat([x, y.to(x.dtype)], 1) for x, y in zip(fresh, known))
        zg = None if zg is None else zg[:, None].expand(b, n, zg.shape[-1])
        a, _ = self.world_model.pi(last, zg)
        q = self.world_model.avg_q(last, a, zg)
        return (total + weight * q).squeeze(-1)

    @torch.no_grad()
    def policy_trajectories(self, z: torch.Tensor, zg: torch.Tensor | None) -> torch.Tensor | None:
        """``[B, num_pi_trajs, H, A]`` action sequences of the policy prior rolled through the model."""
        m = self.cfg["num_pi_trajs"]
        if m <= 0:
            return None
        b = z.shape[0]
        z = z[:, None].expand(b, m, z.shape[-1])
        zg = None if zg is None else zg[:, None].expand(b, m, zg.shape[-1])
        actions = []
        for t in range(self.cfg["horizon"]):
            a, _ = self.world_model.pi(z, zg)
            actions.append(a)
            if t + 1 < self.cfg["horizon"]:  # the latent after the last action is not used
                z = self.world_model.next(z, a)
        return torch.stack(actions, 2)

    # ---------------------------------------------------------------- learn
    def extend(self, transitions: TensorDictBase) -> None:
        if transitions.get(TRAJ_IDS, None) is None:
            raise KeyError(
                f"{type(self).__name__} needs episode ids {TRAJ_IDS} in its transitions to sample sub-trajectories: "
                "collect with a torchrl Collector (it writes them)"
            )
        data = transitions.select("observation", "action", OPTION_INDEX, TRAJ_IDS, "next", *(
            ["level_input"] if "level_input" in transitions.keys() else []))
        data.set("action", self._to_unit(data.get("action")))
        self.store(data)
        self._episode_index = None

    def sample(self) -> TensorDictBase:
        """A ``[B, H]`` batch for `TDMPC2Loss` (model observations, goals, HER copies)."""
        cfg = self.cfg
        data = self.sample_buffer().reshape(cfg["batch_size"], cfg["horizon"])
        obs, goal = self.split(data.get("observation"), data.get("level_input", None))
        next_obs, next_goal = self.split(data.get(("next", "observation")), data.get("level_input", None))
        batch = data.empty()
        batch.set("observation", obs)
        batch.set("action", data.get("action"))
        batch.set(("next", "observation"), next_obs)
        batch.set(("next", "reward"), data.get(("next", "reward")).float())
        batch.set(("next", "terminated"), data.get(("next", "terminated")))
        batch.set(NEXT_DURATION, data.get(NEXT_DURATION))
        if goal is not None:
            batch.set("goal", goal)
            if self.use_her:
                batch = torch.cat([batch] + [self._relabel(batch, data) for _ in range(self.her_goals)], 0)
        return batch

    def _relabel(self, batch: TensorDictBase, data: TensorDictBase) -> TensorDictBase:
        """A copy of ``batch`` whose desired goal at each step is the achieved goal (of the next
        observation) of a uniformly random stored step of the same episode, at that step or later."""
        b, h = batch.shape
        achieved = data.get(("next", "observation"))[..., self.achieved_goal_slice].float()
        stored, index = self._future_steps(data.get("index").reshape(-1))
        new_goal = stored.get(("next", "observation"))[index][..., self.achieved_goal_slice]
        new_goal = new_goal.float().reshape(b, h, -1).to(achieved.device)
        relabelled = batch.clone()
        relabelled.set("goal", new_goal)
        reward = self.reward_fn(achieved_goal=achieved, desired_goal=new_goal)
        relabelled.set(("next", "reward"), reward.reshape(b, h, 1).to(achieved.dtype))
        return relabelled

    def _future_steps(self, index: torch.Tensor) -> tuple[TensorDictBase, torch.Tensor]:
        """``(stored transitions, indices)``: for each storage index in ``index``, a uniformly random
        stored transition of the same episode (``("collector", "traj_ids")``) whose step
        (``option_index``) is the same or later."""
        stored, order, rank, sorted_ids = self._episode_order()
        position = rank[index.to(rank.device)]
        end = torch.searchsorted(sorted_ids, sorted_ids[position], right=True)  # one past the episode's last step
        pick = position + (torch.rand(position.shape, device=position.device) * (end - position)).long()
        return stored, order[torch.minimum(pick, end - 1)]

    def _episode_order(self):
        """The stored transitions sorted by (episode, step): ``(stored, order, rank, sorted episode ids)``,
        ``rank`` the inverse of ``order``; rebuilt when the buffer has changed since the last call."""
        buffer = self.replay_buffer
        storage = buffer.storage
        n = len(storage)
        key = (n, int(buffer.write_count))
        if self._episode_index is None or self._episode_index[0] != key:
            stored = storage.get(slice(0, n))  # views, no copy
            ids, steps = stored.get(TRAJ_IDS).reshape(-1), stored.get(OPTION_INDEX).reshape(-1)
            order = torch.argsort(steps, stable=True)
            order = order[torch.argsort(ids[order], stable=True)]
            rank = torch.empty_like(order)
            rank[order] = torch.arange(n, device=order.device)
            self._episode_index = (key, stored, order, rank, ids[order].contiguous())
        return self._episode_index[1:]

    def learn(self) -> dict[str, float]:
        # the buffer is probed (a sample, which draws random numbers) only when updates are due
        due = self.warmed_up and not self.learning_done and self.schedule.pending(self.n_transitions) > 0
        num = self.updates_due(ready=not due or self._can_sample())
        if num <= 0:
            return {}
        self.world_model.train()  # dropout while learning only, as the official `_update`
        try:
            return self._gradient_steps(num)
        finally:
            self.world_model.eval()

    def _gradient_steps(self, num: int) -> dict[str, float]:
        """``num`` TD-MPC2 updates; the loss entries and gradient norms averaged over the applied ones.

        The rule of `gradient_steps`: a step whose loss or gradient norms are not finite is not
        applied (neither optimiser nor the target Qs move) and is counted in ``skipped_steps``.
        """
        totals: dict[str, torch.Tensor] = {}
        applied = 0
        update_dtype = autocast_dtype(self.cfg["update_dtype"], type(self).__name__, "update_dtype")
        for _ in range(num):
            batch = self.sample()
            with autocast_to(update_dtype, self.device):  # the forward only: gradients stay float32
                losses = self.loss(batch)
            norms = tdmpc2_update(losses, self.optimizer, self.policy_optimizer, self.cfg["grad_clip_norm"])
            if norms is None:
                continue
            self.target_updater.step()
            applied += 1
            for key, value in {**losses, **norms}.items():
                totals[key] = totals.get(key, 0.0) + value.detach()
        metrics = {key: float(value) / applied for key, value in totals.items()}
        metrics["skipped_steps"] = float(num - applied)
        return metrics

    def _can_sample(self) -> bool:
        """Whether the buffer holds a trajectory of ``horizon`` transitions yet."""
        try:
            self.replay_buffer.sample()
        except RuntimeError as err:
            if "trajectory" not in str(err):
                raise
            return False
        return True

    # ---------------------------------------------------------------- state
    def named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        if "loss" not in self._modules:
            return {}
        return {"optimizer": self.optimizer, "policy_optimizer": self.policy_optimizer}
