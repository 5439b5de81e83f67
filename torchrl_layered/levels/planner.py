"""`PlannerLevel`: model-predictive control with a sampling planner over a learned predictor."""
from __future__ import annotations

from functools import partial

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded, Composite, LazyTensorStorage, TensorDictReplayBuffer, TensorSpec, Unbounded

from torchrl_layered.keys import NEXT_DURATION
from torchrl_layered.levels.base import Level
from torchrl_layered.levels.learning import gradient_steps
from torchrl_layered.modules.compiled import compiled_attribute
from torchrl_layered.modules.precision import autocast_dtype
from torchrl_layered.objectives.discount import DiscountPer, check_discount_per, planning_discount
from torchrl_layered.objectives.optim import adam
from torchrl_layered.objectives.predictor import RewardPredictorLoss
from torchrl_layered.objectives.soft_update import ForeachSoftUpdate
from torchrl_layered.predictors.factory import PredictorFactory, build_predictor, default_predictor_factory
from torchrl_layered.predictors.predictor import Predictor, RewardPredictor
from torchrl_layered.planners import SamplingPlanner
from torchrl_layered.planners.factory import resolve_planner


class PlannerLevel(Level):
    """Plans its actions with a sampling planner (CEM, iCEM, MPPI) through a predictor.

    At each of its steps it scores candidate action sequences with the predictor's
    discounted returns (reward per option step, termination-aware, with a value bootstrap at
    the horizon) and takes the first action of the plan. Warm starts are per instance and
    restart with each episode. It learns its predictor from its own semi-MDP transitions
    (one option = one predicted step), so it can plan over the skills of a level below.

    Exploration: a warm-up of random actions (``warm_up_steps`` env steps), then, with
    ``alternate_with_noise``, each instance switches between random and planning phases with
    probabilities ``switch_random_prob`` / ``switch_planner_prob`` per step. In eval mode (or
    a deterministic exploration type) it always plans, with deterministic model predictions
    and a fixed sampling seed, and stores nothing.

    Args:
        predictor: a `Predictor` (learned or known); built with ``predictor_factory`` if None.
        predictor_factory: ``factory(observation_spec, action_spec, input_dim=0) -> Predictor``.
        planner: ``"icem"``, ``"cem"``, ``"mppi"``, a `SamplingPlanner` class, or a
            ``functools.partial`` of one (`torchrl_layered.planners.factory`).
        horizon, num_samples, num_iterations, num_elites: the planner's budget.
        planner_kwargs: further planner arguments (e.g. ``momentum``, ``beta``).
        initial_guess: ``[*A]``, the action a fresh plan starts from (default: the range's centre).
        particles: particles per ensemble member in each imagined rollout.
        gamma: discount per env step: a transition bootstraps with ``gamma ** duration`` and a
            planned option is discounted by ``gamma ** mean_duration`` (`objectives.discount`).
        discount_per: ``"env_step"`` (the above) or ``"option"``: ``gamma`` per option, the
            reference library's rule.
        use_value, use_termination: bootstrap with the value head / discount by survival.
        average_reward: learn the option's reward per env step (its sum / duration).
        learn_predictor: train the predictor from the level's transitions (False for a known model).
        warm_up_steps: env steps of random actions before planning and learning.
        buffer_size, batch_size, update_interval, num_updates, lr, tau: learning schedule.
        learning_steps: stop learning once the level's stored transitions cover this many env
            steps (it goes on acting with what it learned); None: never stop.
        compile: compile the predictor's rollout (``Predictor.compile_rollout``) and the
            loss's forward and backward with ``torch.compile`` (`CompiledOnUse`: at the first
            plan and the first update, eager where compiling fails). Small models, whose plan
            calls and updates are mostly per-op overhead, gain most (results in
            ``benchmarks/results/cem_compile.md``); compiling costs tens of seconds at start.
        planning_dtype: the precision of the predictor's rollouts (``Predictor.planning_dtype``):
            ``"bfloat16"`` plans under autocast, for CPUs with AMX and for GPUs; ``"float32"``
            (the default) leaves a given predictor's own setting.
    """

    supported_action_specs = (Bounded,)
    layeredrl_spellings = {"partial_planner": "planner"}

    def __init__(
        self,
        predictor: Predictor | None = None,
        *,
        predictor_factory: PredictorFactory | None = None,
        planner: str | type[SamplingPlanner] | partial = "icem",
        horizon: int = 10,
        num_samples: int = 256,
        num_iterations: int = 6,
        num_elites: int | None = None,
        planner_kwargs: dict | None = None,
        initial_guess: torch.Tensor | None = None,
        particles: int = 1,
        gamma: float = 0.99,
        discount_per: DiscountPer = "env_step",
        use_value: bool = True,
        use_termination: bool = True,
        average_reward: bool = True,
        learn_predictor: bool = True,
        warm_up_steps: int = 1000,
        alternate_with_noise: bool = False,
        switch_random_prob: float = 0.1,
        switch_planner_prob: float = 0.1,
        buffer_size: int = 100_000,
        batch_size: int = 256,
        update_interval: int = 1,
        num_updates: int = 1,
        learning_steps: int | None = None,
        lr: float = 1e-3,
        tau: float = 0.005,
        compile: bool = False,
        planning_dtype: str = "float32",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if horizon < 1:
            raise ValueError(f"PlannerLevel needs horizon >= 1; got {horizon}")
        self.predictor = predictor
        self.predictor_factory = predictor_factory or default_predictor_factory
        try:
            self.planner_cls, fixed = resolve_planner(planner)
        except (TypeError, ValueError) as err:
            raise type(err)(f"PlannerLevel: {err}") from None
        args = dict(horizon=horizon, num_samples=num_samples, num_iterations=num_iterations, **(planner_kwargs or {}))
        args.update(fixed)  # what the planner partial says wins over the level's defaults
        ratio = args.pop("elite_ratio", None)
        if ratio is not None:
            num_elites = max(2, round(args["num_samples"] * ratio))
        args["num_elites"] = num_elites if num_elites is not None else max(1, args["num_samples"] // 10)
        if initial_guess is not None:
            args["initial_guess"] = initial_guess
        self.planner_args = args
        self.particles, self.gamma = particles, gamma
        self.discount_per = check_discount_per(discount_per, "PlannerLevel")
        self.use_value, self.use_termination = use_value, use_termination
        self.average_reward = average_reward
        self.learn_predictor = learn_predictor
        self.alternate_with_noise = alternate_with_noise
        self.switch_random_prob, self.switch_planner_prob = switch_random_prob, switch_planner_prob
        self.buffer_size, self.batch_size = buffer_size, batch_size
        self.set_update_schedule(warm_up_steps=warm_up_steps, update_interval=update_interval, num_updates=num_updates,
                                 learning_steps=learning_steps)
        self.lr, self.tau = lr, tau
        if not isinstance(compile, bool):
            raise TypeError(f"PlannerLevel: compile must be a bool; got {compile!r}")
        self.compile_enabled = compile
        autocast_dtype(planning_dtype, "PlannerLevel")
        self.planning_dtype = planning_dtype

    # ---------------------------------------------------------------- build
    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec, parent: Level | None = None) -> None:
        super().initialize(observation_spec, action_spec, parent)
        if self.predictor is None:
            self.predictor = build_predictor(self.predictor_factory, observation_spec, action_spec, self.level_input_dim)
        if getattr(self.predictor, "input_dim", 0) != self.level_input_dim:
            raise ValueError(
                f"PlannerLevel: its predictor conditions on a level input of size {getattr(self.predictor, 'input_dim', 0)}, "
                f"but the level {'is the top' if self.is_top else f'gets {self.level_input_dim} input features'}; "
                f"build the predictor with input_dim={self.level_input_dim}"
            )
        args = dict(self.planner_args)
        sigma = args.pop("initial_sigma", None)
        if sigma is not None:  # an absolute std (LayeredRL's spelling): a fraction of the half range here
            args["initial_std"] = float(sigma) / float(((action_spec.space.high - action_spec.space.low) / 2).mean())
        self.planner = self.planner_cls(action_spec, **args)
        if self.compile_enabled:
            self.predictor.compile_rollout = True
        if self.planning_dtype != "float32":
            self.predictor.planning_dtype = self.planning_dtype
        self._update_in_out_keys()
        if self.learn_predictor:
            if not isinstance(self.predictor, RewardPredictor):
                raise TypeError(
                    f"PlannerLevel can only learn a RewardPredictor; got {type(self.predictor).__name__} "
                    "(pass learn_predictor=False for a known model)"
                )
            self.loss = RewardPredictorLoss(self.predictor, gamma=self.gamma, discount_per=self.discount_per)
            self.target_updater = ForeachSoftUpdate(self.loss, tau=self.tau)
            self.optimizer = adam(self.loss.parameters(), lr=self.lr)
            self.replay_buffer = TensorDictReplayBuffer(
                storage=LazyTensorStorage(self.buffer_size, device="auto"), batch_size=self.batch_size
            )

    def get_state_spec(self) -> Composite | None:
        planner = self._modules.get("planner")
        if planner is None:  # not initialized yet
            return None
        return Composite(
            planner=planner.state_spec(),
            random_mode=Unbounded((1,), dtype=torch.bool, device=planner.low.device),
        )

    # ------------------------------------------------------------------ act
    def get_action(self, tensordict: TensorDictBase) -> torch.Tensor:
        obs = tensordict.get("observation").float()
        n = obs.shape[0]
        deterministic = self.deterministic
        random_mode = self._random_mode(tensordict.get(("state", "random_mode")), deterministic)
        tensordict.set(("state", "random_mode"), random_mode)
        random_action = self._uniform(n, obs.device)
        if bool(random_mode.all()):
            return random_action
        state, context = self.predictor.encode(obs)
        level_input = self.level_input_features(tensordict.get("level_input", None))
        generator = None
        if deterministic:
            generator = torch.Generator(device=obs.device).manual_seed(0)
        gamma = planning_discount(self.gamma, self.mean_duration, self.discount_per)

        def objective(actions: torch.Tensor) -> torch.Tensor:
            return self.predictor.returns(
                state, context, actions, particles=self.particles, gamma=gamma, deterministic=deterministic,
                use_value=self.use_value, use_termination=self.use_termination, generator=generator,
                level_input=level_input,
            )

        with self.predictor.planning():  # the model's weights are prepared once for the call's iterations
            result = self.planner(objective, state=tensordict.get(("state", "planner")), generator=generator)
        tensordict.set(("state", "planner"), result.state)
        return torch.where(random_mode, random_action, result.action[:, 0])

    def _random_mode(self, previous: torch.Tensor, deterministic: bool) -> torch.Tensor:
        if deterministic:
            return torch.zeros_like(previous)
        if not self.warmed_up:
            return torch.ones_like(previous)
        if not self.alternate_with_noise:
            return torch.zeros_like(previous)
        u = torch.rand(previous.shape, device=previous.device)
        to_random = ~previous & (u < self.switch_random_prob)
        to_plan = previous & (u < self.switch_planner_prob)
        return (previous | to_random) & ~to_plan

    def _uniform(self, n: int, device) -> torch.Tensor:
        low, high = self.action_spec.space.low.to(device), self.action_spec.space.high.to(device)
        return low + torch.rand(n, *self.action_spec.shape, device=device) * (high - low)

    # ---------------------------------------------------------------- learn
    def get_reward(self, transitions: TensorDictBase) -> torch.Tensor:
        reward = transitions.get(("next", "reward"))
        if self.average_reward:
            return reward / transitions.get(NEXT_DURATION).to(reward.dtype)
        return reward

    def extend(self, transitions: TensorDictBase) -> None:
        if self.replay_buffer is not None:
            data = transitions.select("observation", "action", "next")
            if self.level_input_dim:
                data.set("level_input", self.level_input_features(transitions.get("level_input")))
            self.store(data)

    def learn(self) -> dict[str, float]:
        if self.replay_buffer is None:
            return {}
        num = self.updates_due(ready=len(self.replay_buffer) > 1)
        if num <= 0:
            return {}
        forward = None
        if self.compile_enabled:
            forward = compiled_attribute(self, "_compiled_loss", self.loss.forward, "PlannerLevel loss")
        return gradient_steps(self.loss, self.optimizer, self.target_updater, self.sample_batches(num), 20.0,
                              forward=forward)

    def named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer} if self.replay_buffer is not None else {}
