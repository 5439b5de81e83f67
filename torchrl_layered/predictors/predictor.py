"""Predictors: world models in an encoder's latent space that score action sequences.

A `Predictor` bundles an encoder, a dynamics model, and optional reward, value and
termination terms. Planners call `Predictor.returns` to score a batch of action sequences;
skill levels below a planner use its encoder and `log_prob` as their skill-dynamics model.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
from typing import Callable

import torch
from torch import nn
from torchrl.modules import MLP

from torchrl_layered.predictors.encoders import Encoder
from torchrl_layered.modules.cpu_linear import Linear
from torchrl_layered.modules.compiled import compiled_attribute
from torchrl_layered.modules.precision import autocast_dtype, autocast_to
from torchrl_layered.modules.ensemble import ProbabilisticEnsemble
from torchrl_layered.modules.particles import check_particles, spread_particles
from torchrl_layered.modules.in_place import activation_class, run_sequential


class KnownModel(nn.Module):
    """A known deterministic model ``step_fn(state, action, context) -> next_state`` as a predictor model."""

    num_elites = 1

    def __init__(self, step_fn: Callable[..., torch.Tensor]):
        super().__init__()
        self.step_fn = step_fn

    def step(self, state, action, context=None, *, deterministic=False, generator=None, particles=1):
        """``(s', p_term = 0)``; with ``particles > 1`` each row's outcome repeated for its particles."""
        check_particles(particles, f"{type(self).__name__}.step")
        next_state = spread_particles(self.step_fn(state, action, context), particles)
        return next_state, torch.zeros(next_state.shape[:-1], device=next_state.device, dtype=next_state.dtype)


class Predictor(nn.Module):
    """Rolls out action sequences in the encoder's latent and scores them.

    Args:
        encoder: splits observations into (state, context).
        model: a dynamics model with ``num_elites`` and ``step(state, action, context, deterministic)``
            acting on ``[E, K, *]`` particles (e.g. `ProbabilisticEnsemble` or `KnownModel`). A
            ``step`` that takes ``particles`` (as those two do) predicts the first imagined step
            once per candidate for all its particles, which all start in the same state. A
            model with ``planning_view()`` is asked for one per rollout without gradients and
            that view steps instead (same ``num_elites`` and ``step``; `PlanningEnsemble`).
        reward: ``reward(state, context, action) -> [*]`` per step (a module or a function).
        value: ``value(state, context) -> [*]``, the bootstrap at the horizon, or None.
        input_dim: size of the level input (the parent's option, as `Level.level_input_features`)
            that the reward and value condition on; 0 for a top level. The dynamics never see
            it: the levels below act on their own inputs only, so the option's outcome does not
            depend on what the parent asked for, only what it is worth does.
        rollout_chunk: rollouts (candidates x particles) imagined at once per member; larger
            batches go through the horizon in chunks of this size (whole candidates: rounded
            down to a multiple of the particles, at least one candidate). Chunking keeps each
            layer's activations a few MB, so they stay in cache and freed memory is reused
            instead of being mapped afresh by the kernel: a PETS-size plan call (12,288
            rollouts per member) runs about twice as fast as in one piece
            (`benchmarks/planner_level_speed.py`). None rolls everything out at once.
        goal_reward: ``goal_reward(state, context) -> [*]``, a known reward per step; where
            given, a step is scored by it at the state the model predicts next, instead of by
            ``reward`` (see `RewardPredictor`).
        compile_rollout: roll out with ``torch.compile`` of the rollout over the horizon
            (dynamics, reward and value heads together), compiled at the first plan. On small
            models, where a plan call is many small ops, this fuses the elementwise work and
            drops the per-op overhead: a CEM call of the planner level benchmark (one [128,
            128] member) ran a median 1.15x (1.0-1.5x) faster on a 2-core AVX2 CPU, and
            1.1-1.2x on an AVX-512 one with the noise drawn as below, after ~15 s of
            compilation; large models are matmul-bound and gain nothing. Where the
            rollout cannot be compiled (no C++ compiler, an unsupported op) it warns once
            and rolls out eagerly (`CompiledOnUse`). Sampled rollouts draw their noise before
            the compiled graph (from ``generator`` where given) and hand it to the model's
            ``step(..., noise=)``; for a model whose ``step`` takes no ``noise``, sampled
            rollouts given a ``generator`` run eagerly.
        planning_dtype: ``"float32"``, or ``"bfloat16"`` to roll out under ``torch.autocast``
            (`modules.precision`): several times faster matmuls on AMX CPUs and GPUs, slower
            elsewhere. Parameters and returns stay float32.
    """

    def __init__(self, encoder: Encoder, model: nn.Module, reward: Callable, value: Callable | None = None,
                 input_dim: int = 0, rollout_chunk: int | None = 1024,
                 goal_reward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 compile_rollout: bool = False, planning_dtype: str = "float32"):
        super().__init__()
        if not isinstance(compile_rollout, bool):
            raise TypeError(f"{type(self).__name__}: compile_rollout must be a bool; got {compile_rollout!r}")
        self.compile_rollout = compile_rollout
        autocast_dtype(planning_dtype, type(self).__name__)
        self.planning_dtype = planning_dtype
        if rollout_chunk is not None and (isinstance(rollout_chunk, bool) or not isinstance(rollout_chunk, int)
                                          or rollout_chunk < 1):
            raise ValueError(f"{type(self).__name__}: rollout_chunk must be an int >= 1 or None; got {rollout_chunk!r}")
        self.encoder = encoder
        self.model = model
        #: whether ``model.step`` takes drawn ``noise`` (`ProbabilisticEnsemble` does)
        self.model_takes_noise = "noise" in inspect.signature(model.step).parameters
        #: whether ``model.step`` spreads each row over ``particles`` (`ProbabilisticEnsemble.step`)
        self.model_takes_particles = "particles" in inspect.signature(model.step).parameters
        self.reward = reward
        self.value = value
        self.input_dim = input_dim
        self.rollout_chunk = rollout_chunk
        if goal_reward is not None and not callable(goal_reward):
            raise TypeError(f"{type(self).__name__}: goal_reward must be callable (state, context) -> reward; "
                            f"got {type(goal_reward).__name__}")
        if goal_reward is not None:  # one probe call: a reward of the wrong shape fails here, not mid-plan
            probe = goal_reward(torch.zeros(3, encoder.latent_state_dim), torch.zeros(3, encoder.context_dim))
            if not isinstance(probe, torch.Tensor) or probe.shape != (3,) or not probe.is_floating_point():
                got = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
                raise ValueError(f"{type(self).__name__}: goal_reward(state [3, d], context [3, c]) must return a float "
                                 f"tensor [3] (one reward per row); got {got}")
        self.goal_reward = goal_reward
        self._prepared: dict | None = None  # the planning view of the current `planning` block

    @property
    def latent_state_dim(self) -> int:
        return self.encoder.latent_state_dim

    @property
    def context_dim(self) -> int:
        return self.encoder.context_dim

    def encode(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(obs)

    def head_context(self, context: torch.Tensor, level_input: torch.Tensor | None) -> torch.Tensor:
        """What the reward and value see besides the state: the context, then the level input."""
        if not self.input_dim:
            return context
        if level_input is None or level_input.shape[-1] != self.input_dim:
            got = None if level_input is None else tuple(level_input.shape)
            raise ValueError(f"{type(self).__name__} was built for a level input of size {self.input_dim}; got {got}")
        return torch.cat([context, level_input.to(context.dtype).expand(*context.shape[:-1], -1)], -1)

    def returns(
        self,
        state: torch.Tensor,
        context: torch.Tensor,
        actions: torch.Tensor,
        *,
        particles: int = 1,
        gamma: float = 1.0,
        deterministic: bool = False,
        use_value: bool = True,
        use_termination: bool = True,
        generator: torch.Generator | None = None,
        level_input: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Discounted predicted returns of ``actions [B, N, H, A]`` from ``state [B, d]``: ``[B, N, E*P]``.

        Each of the ``particles`` per elite member stays with its member for the whole
        horizon (TS-style), so the spread over the last dim reflects model uncertainty.
        Deterministic rollouts of one member are identical, so they are computed once; sampled
        ones share their first step's prediction (they start from the same state with the
        same action) and the first reward is computed once per candidate for all members.
        ``level_input [B, input_dim]`` conditions the reward and value (below a parent).
        """
        check_particles(particles, f"{type(self).__name__}.returns")
        b, n, h = actions.shape[:3]
        e = self.model.num_elites
        if deterministic and particles > 1:  # identical particles: roll out one per member, copy its return
            one = self.returns(state, context, actions, particles=1, gamma=gamma, deterministic=True,
                               use_value=use_value, use_termination=use_termination, level_input=level_input)
            return one[..., None].expand(b, n, e, particles).reshape(b, n, e * particles)
        m = b * n  # candidates, each rolled out by ``particles`` particles per member (candidate-major rows)

        def per_candidate(x: torch.Tensor) -> torch.Tensor:
            return x[:, None].expand(b, n, x.shape[-1]).reshape(1, m, -1)

        s, c = per_candidate(state), per_candidate(context)
        hc = per_candidate(self.head_context(context, level_input))
        a_seq = actions.reshape(1, m, h, -1)
        # candidates per chunk: a chunk holds whole candidates, all their particles
        chunk = m if self.rollout_chunk is None else max(1, self.rollout_chunk // particles)
        settings = dict(gamma=gamma, deterministic=deterministic, use_value=use_value, use_termination=use_termination)
        generator = None if deterministic else generator
        # a sampled rollout draws its noise for all steps at once (one call, not one per step), and
        # a compiled one eagerly, outside the graph: a compiled graph's own normal draws cost a
        # third of a small model's plan call on a CPU
        predraw = not deterministic and self.model_takes_noise
        rollout = self._rollout_fn() if predraw or generator is None else self._rollout
        with autocast_to(autocast_dtype(self.planning_dtype, type(self).__name__), state.device):
            parts = []
            for i in range(0, m, chunk):
                rows = min(chunk, m - i) * particles
                noise = None
                if predraw:
                    noise = torch.randn(h, e, rows, self.latent_state_dim, device=state.device, dtype=state.dtype,
                                        generator=generator)
                parts.append(rollout(s[:, i : i + chunk], c[:, i : i + chunk], hc[:, i : i + chunk],
                                     a_seq[:, i : i + chunk], noise, generator=None if predraw else generator,
                                     particles=particles, **settings).float())
            total = torch.cat(parts, 1)
        return total.reshape(e, b, n, particles).permute(1, 2, 0, 3).reshape(b, n, e * particles)

    def _rollout_fn(self) -> Callable[..., torch.Tensor]:
        """`_rollout`, compiled (`CompiledOnUse`) where ``compile_rollout`` asks for it."""
        if not self.compile_rollout:
            return self._rollout
        return compiled_attribute(self, "_compiled_rollout", self._rollout, f"{type(self).__name__} rollout",
                                  dynamic=None)

    def _rollout(self, s, c, hc, a_seq, noise, *, particles, gamma, deterministic, use_value, use_termination,
                 generator):
        """Discounted returns ``[E, k]`` of ``k = m * particles`` rollouts: ``particles`` per candidate
        ``a_seq [1, m, H, A]`` from ``s [1, m, d]`` (candidate-major); ``noise [H, E, k, d]``: the
        standard normal draws of the sampled steps, or None (drawn by the model).

        The first step starts every particle of a candidate, in every member, from the same state
        with the same action: its reward is computed once per candidate and, where the model
        takes ``particles``, its prediction once per candidate and member.
        """
        model = self._planning_model()
        e, m, h = model.num_elites, s.shape[1], a_seq.shape[2]
        k = m * particles
        a0 = a_seq[:, :, 0]
        total = torch.zeros(e, k, device=a_seq.device, dtype=s.dtype)
        if self.goal_reward is None:
            total = total + spread_particles(self.reward(s, hc, a0).reshape(1, m), particles)
        drawn = {} if noise is None else {"noise": noise[0]}
        c_all = spread_particles(c, particles).expand(e, k, -1)
        if self.model_takes_particles:
            s, term = model.step(s.expand(e, m, -1), a0.expand(e, m, -1), c.expand(e, m, -1),
                                 deterministic=deterministic, generator=generator, particles=particles, **drawn)
        else:
            s, term = model.step(spread_particles(s, particles).expand(e, k, -1),
                                 spread_particles(a0, particles).expand(e, k, -1), c_all,
                                 deterministic=deterministic, generator=generator, **drawn)
        c, hc = c_all, spread_particles(hc, particles).expand(e, k, -1)
        a_seq = spread_particles(a_seq, particles)
        alive = torch.ones_like(total)
        for t in range(h):
            if t > 0:
                a = a_seq[:, :, t].expand(e, k, -1)
                if self.goal_reward is None:
                    total = _add_weighted(total, alive, gamma**t, self.reward(s, hc, a).reshape(e, k))
                drawn = {} if noise is None else {"noise": noise[t]}
                s, term = model.step(s, a, c, deterministic=deterministic, generator=generator, **drawn)
            if self.goal_reward is not None:  # the env's reward where the option is predicted to end
                total = _add_weighted(total, alive, gamma**t, self.goal_reward(s, c).reshape(e, k).to(total.dtype))
            if use_termination:
                alive = torch.addcmul(alive, alive, term.to(alive.dtype), value=-1)  # alive * (1 - term), one pass
        if use_value and self.value is not None:
            total = _add_weighted(total, alive, gamma**h, self.value(s, hc).reshape(e, k))
        return total

    @contextlib.contextmanager
    def planning(self):
        """Within it, the model's weights are prepared once (its ``planning_view()``, e.g.
        `PlanningEnsemble`) for every eager rollout without gradients, not once per `returns`
        call: for one plan call, whose iterations score candidates with the same weights."""
        outer = getattr(self, "_prepared", None)
        self._prepared = {}
        try:
            yield self
        finally:
            self._prepared = outer

    def _planning_model(self):
        """What the rollout steps: the model's planning view where it has one and no gradient is
        recorded (made once per `planning` block when eager, else once per rollout), else the model."""
        prepare = None if torch.is_grad_enabled() else getattr(self.model, "planning_view", None)
        if prepare is None:
            return self.model
        prepared = getattr(self, "_prepared", None)  # None outside a block (or on a subclass built without one)
        if prepared is None or torch.compiler.is_compiling():
            return prepare()
        if "view" not in prepared:
            prepared["view"] = prepare()
        return prepared["view"]

    def log_prob(self, state, action, next_state, context=None, *, std=None) -> torch.Tensor:
        """``log q(s' | s, c, a)`` of the dynamics model (for skill learners)."""
        if not hasattr(self.model, "log_prob"):
            raise TypeError(f"{type(self.model).__name__} has no log_prob; skill levels need a ProbabilisticEnsemble")
        return self.model.log_prob(state, action, next_state, context, std=std)


def _add_weighted(total: torch.Tensor, weight: torch.Tensor, scale, term: torch.Tensor) -> torch.Tensor:
    """``total + weight * scale * term`` in one pass where ``scale`` is a number."""
    if isinstance(scale, torch.Tensor):
        return total + weight * scale * term
    return torch.addcmul(total, weight, term, value=scale)


class _Head(nn.Module):
    """An MLP on the concatenation of its inputs, returning ``[*]``."""

    def __init__(self, in_dim: int, hidden_sizes, zero_last: bool = False, activation: type[nn.Module] = nn.SiLU):
        super().__init__()
        self.net = MLP(in_features=in_dim, out_features=1, num_cells=list(hidden_sizes), activation_class=activation,
                       layer_class=Linear)  # nn.Linear with the faster CPU kernel (`modules.cpu_linear`)
        if zero_last:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        return run_sequential(self.net, torch.cat([p for p in parts if p.shape[-1]], -1)).squeeze(-1)


class RewardPredictor(Predictor):
    """A predictor that learns its dynamics, reward, value and termination from transitions.

    Train it with `torchrl_layered.objectives.RewardPredictorLoss`.

    Args:
        encoder: splits observations into (state, context).
        action_dim: size of the action.
        num_members, hidden_sizes, num_elites: of the `ProbabilisticEnsemble`.
        head_sizes: hidden widths of the reward and value heads.
        activation: of the hidden layers of the ensemble and both heads, an ``nn.Module`` class
            or its name in ``torch.nn``: SiLU (as PETS) by default; ``"ReLU"`` is what the
            reference library's nets use, a cheaper pass on CPUs whose exp is slow (on an AVX2
            CPU a PETS-size plan call took 8.8-9.3 s against 9.1-9.4 s, `benchmarks/README.md`).
        use_value: learn a value head (bootstrap at the planning horizon).
        input_dim: size of the level input the reward and value condition on (0 at the top).
        dynamics_context: the dynamics model sees the context; False where the state's motion
            does not depend on it (e.g. skills that do not see the desired goal), so that the
            model cannot pick up a spurious dependence. The reward and value always see it.
        rollout_chunk: rollouts imagined at once per member (see `Predictor`).
        compile_rollout: compile the rollout with ``torch.compile`` (see `Predictor`).
        planning_dtype: the rollout's precision (see `Predictor`).
        goal_reward: the env's reward per step as a torch function of (state, context), e.g.
            ``env.goal_reward`` of a goal-based env from `make_env` (achieved goal, desired goal).
            Where given, planning scores an option with it at the state the model predicts the
            option ends in, instead of with the learned reward head: the planner then only has to
            learn where its options go. The head is still trained (and `returns` of a predictor
            without it uses it).
    """

    def __init__(
        self,
        encoder: Encoder,
        action_dim: int,
        *,
        num_members: int = 5,
        hidden_sizes=(200, 200, 200),
        num_elites: int | None = None,
        head_sizes=(128, 128),
        use_value: bool = True,
        input_dim: int = 0,
        dynamics_context: bool = True,
        rollout_chunk: int | None = 1024,
        goal_reward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        compile_rollout: bool = False,
        planning_dtype: str = "float32",
        activation: type[nn.Module] | str = nn.SiLU,
    ):
        activation = activation_class(activation, type(self).__name__)
        model = ProbabilisticEnsemble(
            encoder.latent_state_dim, action_dim, encoder.context_dim if dynamics_context else 0,
            num_members=num_members, hidden_sizes=hidden_sizes, num_elites=num_elites, activation=activation,
        )
        d, c = encoder.latent_state_dim, encoder.context_dim + input_dim
        reward = _Head(d + c + action_dim, head_sizes, activation=activation)
        value = _Head(d + c, head_sizes, zero_last=True, activation=activation) if use_value else None
        super().__init__(encoder, model, reward, value, input_dim, rollout_chunk, goal_reward, compile_rollout,
                         planning_dtype)


def target_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` (for targets that a loss updates by Polyak averaging)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target
