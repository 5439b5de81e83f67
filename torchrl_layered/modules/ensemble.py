"""`ProbabilisticEnsemble`: a batched ensemble of Gaussian dynamics models (PETS-style).

All members live in one module: each layer holds ``[M, in, out]`` weights and runs as one
batched matmul, so an ensemble costs one kernel per layer instead of one per member.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from torchrl_layered.modules.cpu_linear import addmm_into
from torchrl_layered.modules.in_place import IN_PLACE_ACTIVATIONS, activate, activation_class
from torchrl_layered.modules.particles import check_particles, spread_particles


def check_outcomes(state: torch.Tensor, outcome: torch.Tensor, name: str) -> None:
    """Refuses outcomes that are not ``[*K, *state.shape]``: one outcome (or ``K``) per state row."""
    k = outcome.dim() - state.dim()
    if k < 0 or outcome.shape[k:] != state.shape:
        raise ValueError(f"{name}: the outcomes must have the states' shape {tuple(state.shape)}, optionally with "
                         f"leading dims of their own (several outcomes per row); got {tuple(outcome.shape)}")


class EnsembleLinear(nn.Module):
    """``M`` independent linear layers applied to ``[M, N, in]`` with one ``baddbmm``.

    The weight is ``[M, in, out]``, contiguous (as torch.distributed and TorchRL's weight
    updaters need). On a CPU a head of fewer than 16 outputs from at least four times as many
    inputs (a `ProbabilisticEnsemble` head of ``2 * state_dim + 1``) multiplies from a copy laid
    out as ``[M, out, in]`` (`compute_weight`), the layout of ``nn.Linear``: CPU kernels multiply
    ``[N, in] x [in, out]`` for 2 to 9 outputs 2-3x faster from it (40-600 us less a call), and
    the copy of so small a weight costs 5-10 us.
    """

    def __init__(self, num_members: int, in_features: int, out_features: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_features).uniform_(-bound, bound))

    @property
    def skinny(self) -> bool:
        """Fewer than 16 outputs from at least four times as many inputs."""
        in_features, out_features = self.weight.shape[1:]
        return out_features < 16 and 4 * out_features <= in_features

    def compute_weight(self) -> torch.Tensor:
        """The weight ``[M, in, out]`` to multiply by: column-major for a skinny head on a CPU
        (a differentiable copy), the parameter itself otherwise."""
        weight = self.weight
        if self.skinny and weight.device.type == "cpu":
            return weight.transpose(1, 2).contiguous().transpose(1, 2)
        return weight

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        weight, bias = self.compute_weight(), self.bias
        if members is not None:
            weight, bias = weight[members], bias[members]
        return torch.baddbmm(bias, x, weight)


class RunningNormalizer(nn.Module):
    """Running mean and std of a feature vector (EMA, initialised from the first batch)."""

    def __init__(self, dim: int, momentum: float = 0.01, eps: float = 1e-6):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1])
        if x.shape[0] < 2 or x.shape[-1] == 0:
            return
        mean, std = x.mean(0), x.std(0).clamp_min(self.eps)
        m = torch.where(self.initialized, torch.tensor(self.momentum, device=x.device), torch.tensor(1.0, device=x.device))
        self.mean.lerp_(mean, m)
        self.std.lerp_(std, m)
        self.initialized.fill_(True)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def member_by_member(x: torch.Tensor, params: list[tuple[torch.Tensor, torch.Tensor]], indices: Sequence[int],
                     activation: Callable[..., torch.Tensor]) -> torch.Tensor:
    """An ensemble stack's outputs ``[len(indices), N, out]`` for inputs ``[len(indices), N, in]``
    (or ``[1, N, in]`` shared), without gradients: member ``indices[i]`` of each layer's
    ``(weight [M, in, out], bias [M, 1, out])`` in ``params``, one member at a time through all
    its layers, ``activation(h, inplace=True)`` between them.

    On a CPU a batched matmul shares its members out among the threads (5 members on 2
    threads leave one idle a sixth of the time) and each layer's ``[M', N, width]`` output
    leaves the cache before the next layer reads it. Here every ``addmm`` runs on all threads
    and a member's ``[N, width]`` activations stay cache-resident from layer to layer, written
    into buffers reused across members (new ones where oneDNN's linear is taken,
    `modules.cpu_linear`): a PETS-size plan call (5 members, [200] x 3, 1024 rows a member)
    runs ~9% faster. Same arithmetic, per member, as ``baddbmm``.
    """
    dtype = torch.result_type(x, params[-1][0])
    x = x.expand(len(indices), *x.shape[1:])
    hidden = [torch.empty(x.shape[1], w.shape[-1], dtype=dtype) for w, _ in params[:-1]]
    out = torch.empty(len(indices), x.shape[1], params[-1][0].shape[-1], dtype=dtype)
    for row, member in enumerate(indices):
        h = x[row]
        for (weight, bias), buffer in zip(params[:-1], hidden):
            h = activation(addmm_into(bias[member], h, weight[member], buffer), inplace=True)
        target = out[row]
        result = addmm_into(params[-1][1][member], h, params[-1][0][member], target)
        if result.data_ptr() != target.data_ptr():
            target.copy_(result)
    return out


def draw_step(mean: torch.Tensor, std: torch.Tensor, term: torch.Tensor, *, particles: int, deterministic: bool,
              generator: torch.Generator | None, noise: torch.Tensor | None):
    """``(s', p_term)`` of a predicted Gaussian step (`ProbabilisticEnsemble.step`): the mean, or a
    draw ``mean + std * noise``; each row spread over its ``particles`` first."""
    if particles > 1:
        mean, std, term = (spread_particles(x, particles) for x in (mean, std, term))
    if deterministic:
        return mean, term
    if noise is not None:
        if noise.shape != mean.shape:
            raise ValueError(f"ProbabilisticEnsemble.step: noise must have the next state's shape "
                             f"{tuple(mean.shape)}; got {tuple(noise.shape)}")
    elif generator is None:  # randn_like also traces with symbolic shapes (a compiled rollout, `Predictor`)
        noise = torch.randn_like(mean)
    else:
        noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
    return torch.addcmul(mean, std, noise), term


class ProbabilisticEnsemble(nn.Module):
    """``M`` Gaussian models of ``p(s' | s, c, a)`` with learned, softly bounded log-variance.

    Each member predicts a diagonal Gaussian over the (normalised) state change and a
    termination logit. Inputs and targets are normalised with running statistics, so the
    nets see unit-scale data whatever the env. Members differ by their initialisation (and,
    in `EnsembleModelLoss`, by bootstrapped batches); their disagreement off the data is the
    epistemic uncertainty that planners can use.

    Args:
        state_dim: size of the (latent) state.
        action_dim: size of the action (one-hot size for discrete actions).
        context_dim: size of an episode-constant context (e.g. a desired goal), 0 for none.
        num_members: ensemble size ``M``.
        hidden_sizes: widths of the hidden layers of every member.
        activation: of the hidden layers, an ``nn.Module`` class or its name in ``torch.nn``
            (SiLU, as PETS; the reference library's nets use ReLU, a cheaper pass on CPUs
            whose exp is slow).
        num_elites: members used for prediction (the best by running loss); all when None.
        predict_delta: predict ``s' - s`` (True) or ``s'``.
        min_logvar, max_logvar: initial soft bounds of the (normalised) log-variance.
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        context_dim: int = 0,
        *,
        num_members: int = 5,
        hidden_sizes: Sequence[int] = (200, 200, 200),
        activation: type[nn.Module] | str = nn.SiLU,
        num_elites: int | None = None,
        predict_delta: bool = True,
        min_logvar: float = -10.0,
        max_logvar: float = 0.5,
    ):
        super().__init__()
        if num_members < 1:
            raise ValueError(f"ProbabilisticEnsemble needs num_members >= 1; got {num_members}")
        if num_elites is not None and not 1 <= num_elites <= num_members:
            raise ValueError(f"num_elites must lie in [1, num_members={num_members}]; got {num_elites}")
        self.state_dim, self.action_dim, self.context_dim = state_dim, action_dim, context_dim
        self.num_members = num_members
        self.num_elites = num_elites or num_members
        self.predict_delta = predict_delta
        in_dim = state_dim + context_dim + action_dim
        sizes = [in_dim, *hidden_sizes]
        self.layers = nn.ModuleList(EnsembleLinear(num_members, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = activation_class(activation, type(self).__name__)()
        self.head = EnsembleLinear(num_members, sizes[-1], 2 * state_dim + 1)
        self.max_logvar = nn.Parameter(torch.full((state_dim,), max_logvar))
        self.min_logvar = nn.Parameter(torch.full((state_dim,), min_logvar))
        self.input_normalizer = RunningNormalizer(in_dim)
        self.target_normalizer = RunningNormalizer(state_dim)
        self.register_buffer("member_loss", torch.zeros(num_members))
        self.register_buffer("elites", torch.arange(self.num_elites))

    # ------------------------------------------------------------------ core
    def inputs(self, state: torch.Tensor, context: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """``[state, context, action]``; a model built with ``context_dim=0`` ignores any context."""
        parts = [state] + ([context] if context is not None and self.context_dim else []) + [action]
        return torch.cat(parts, -1)

    def normalized_forward(self, x: torch.Tensor, members: torch.Tensor | None = None):
        """Raw outputs for normalised inputs ``[M', N, in]``: mean, bounded log-var, termination logit."""
        if self._member_major(x, self.num_members if members is None else members.numel()):
            out = self._forward_member_by_member(x, members)
        else:
            h = x
            for layer in self.layers:
                h = activate(self.activation, layer(h, members))
            out = self.head(h, members)
        d = self.state_dim
        return out[..., :d], self.bounded_logvar(out[..., d : 2 * d]), out[..., 2 * d]

    def bounded_logvar(self, raw: torch.Tensor) -> torch.Tensor:
        """The head's raw log-variance softly held between ``min_logvar`` and ``max_logvar``."""
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        return self.min_logvar + F.softplus(logvar - self.min_logvar)

    def _member_major(self, x: torch.Tensor, count: int) -> bool:
        """Whether a forward runs member by member: several members, no gradient recorded, eager, on a CPU, in full precision.

        Under autocast the batched path stays (``out=`` matmuls are not autocast, and a bfloat16
        batched matmul beat a cast member-by-member one: 2.5 s against 2.8 s a PETS-size call).
        """
        return (count > 1 and not torch.is_grad_enabled() and x.device.type == "cpu"
                and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
                and type(self.activation) in IN_PLACE_ACTIVATIONS)

    def _forward_member_by_member(self, x: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
        """The stack's raw outputs ``[M', N, out]``, one member at a time through all its layers
        (`member_by_member`)."""
        indices = range(self.num_members) if members is None else members.tolist()
        params = [(layer.compute_weight(), layer.bias) for layer in [*self.layers, self.head]]
        return member_by_member(x, params, indices, IN_PLACE_ACTIVATIONS[type(self.activation)])

    def forward(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        members: torch.Tensor | None = None,
    ):
        """Predicts ``s'`` for inputs ``[M', N, *]`` (one slice per member in ``members``).

        Returns ``(mean, std, term_prob)`` in the state's own units: ``[M', N, d]``,
        ``[M', N, d]``, ``[M', N]``.
        """
        x = self.input_normalizer.normalize(self.inputs(state, context, action))
        mean, logvar, term_logit = self.normalized_forward(x, members)
        std = (0.5 * logvar).exp() * self.target_normalizer.std
        mean = self.target_normalizer.denormalize(mean)
        if self.predict_delta:
            mean = mean + state
        return mean, std, torch.sigmoid(term_logit)

    def step(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        particles: int = 1,
    ):
        """One imagined step for particles ``[E, N, *]`` of the elite members: ``(s', p_term)``.

        A sampled step adds ``std * noise``: ``noise`` standard normal draws of the next state's
        shape where given (drawn by the caller, e.g. outside a compiled rollout), else drawn here.
        With ``particles > 1`` each input row stands for that many particles in the same state
        (`spread_particles`): the prediction is computed once per row and each particle draws
        its own noise, so the outputs are ``[E, N * particles, *]``.
        """
        check_particles(particles, f"{type(self).__name__}.step")
        mean, std, term = self(state, action, context, members=self._prediction_members())
        return draw_step(mean, std, term, particles=particles, deterministic=deterministic, generator=generator,
                         noise=noise)

    def planning_view(self) -> PlanningEnsemble:
        """The prediction members prepared for the steps of one imagined rollout (`PlanningEnsemble`)."""
        return PlanningEnsemble(self)

    def _prediction_members(self) -> torch.Tensor | None:
        """The elite members' indices, or None when all members predict (no weight gather)."""
        return None if self.num_elites == self.num_members else self.elites

    @torch.no_grad()
    def update_elites(self, member_loss: torch.Tensor, momentum: float = 0.1) -> None:
        """Tracks each member's loss and keeps the best ``num_elites`` members for prediction."""
        self.member_loss.lerp_(member_loss.detach(), momentum)
        if self.num_elites < self.num_members:
            self.elites.copy_(self.member_loss.topk(self.num_elites, largest=False).indices.sort().values)

    def normalized_target(self, state: torch.Tensor, next_state: torch.Tensor) -> torch.Tensor:
        """What the members predict for ``s -> s'``: the (normalised) state change, or ``s'`` itself."""
        target = next_state - state if self.predict_delta else next_state
        return self.target_normalizer.normalize(target)

    def log_prob(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
        next_state: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        std: torch.Tensor | float | None = None,
        normalized: bool = False,
    ) -> torch.Tensor:
        """``log p(s' | s, c, a)`` under the mixture of the elite members, ``[*]`` for inputs ``[*, d]``.

        ``std`` replaces the predicted std (a fixed-width density, as skill learners use).
        With ``normalized=True`` the density is taken in the model's normalised target space
        (the state change scaled by its running std, ``std`` in those units): a fixed width
        then means the same in every state dimension, whatever its scale.

        ``next_state`` may carry leading dims of its own, ``[*K, *, d]``: ``K`` outcomes scored
        under one prediction (the members run once), ``[*K, *]``.
        """
        check_outcomes(state, next_state, "ProbabilisticEnsemble.log_prob")
        lead = state.shape[:-1]
        extra = next_state.shape[: next_state.dim() - state.dim()]
        flat = lambda t: t.reshape(1, -1, t.shape[-1]).expand(self.num_elites, -1, -1)  # noqa: E731
        members = self._prediction_members()
        if normalized:
            x = self.input_normalizer.normalize(self.inputs(state, context, action))
            mean, logvar, _ = self.normalized_forward(flat(x), members)
            pred_std = (0.5 * logvar).exp()
            target = self.normalized_target(state, next_state).reshape(*extra, 1, -1, next_state.shape[-1])
        else:
            ctx = None if context is None else flat(context)
            mean, pred_std, _ = self(flat(state), flat(action), ctx, members=members)
            target = next_state.reshape(*extra, 1, -1, next_state.shape[-1])
        scale = pred_std if std is None else torch.as_tensor(std, device=mean.device, dtype=mean.dtype).expand_as(mean)
        per_member = torch.distributions.Normal(mean, scale).log_prob(target).sum(-1)  # [*K, E, rows]
        return (per_member.logsumexp(-2) - math.log(self.num_elites)).reshape(*extra, *lead)


class PlanningEnsemble:
    """A `ProbabilisticEnsemble`'s prediction members, prepared for the steps of one imagined
    rollout without gradients (`Predictor` makes one per rollout; do not keep it across learning).

    The weights are read once and rearranged so that a step does less: the input normaliser is
    folded into the first layer (``((x - mu) / sigma) W + b = x (W / sigma) + (b - (mu / sigma) W)``),
    the target normaliser into the head's mean columns, its std into the log-variance
    (``e^(logvar / 2) sigma = e^(logvar / 2 + log sigma)``), the elite members are gathered and a
    skinny head laid out for the CPU once, not at every step. A step of one [128, 128] member
    over 768 rows took 285 instead of 365 us (2 threads). The predictions are the ensemble's
    `step`'s, up to float rounding.
    """

    def __init__(self, model: ProbabilisticEnsemble):
        self.model = model
        self.num_elites = model.num_elites
        members = model._prediction_members()
        params = [(layer.weight, layer.bias) for layer in [*model.layers, model.head]]
        if members is not None:
            params = [(w[members], b[members]) for w, b in params]
        mu, sigma = model.input_normalizer.mean, model.input_normalizer.std
        (w1, b1), (wh, bh) = params[0], params[-1]
        scaled = mu / sigma
        params[0] = (w1 / sigma[:, None], b1 - (scaled[:, None] * w1).sum(-2, keepdim=True))  # no matmul: autocast-free
        d = model.state_dim
        shift, scale = model.target_normalizer.mean, model.target_normalizer.std
        wh = torch.cat([wh[..., :d] * scale, wh[..., d:]], -1)
        if model.head.skinny and wh.device.type == "cpu":
            wh = wh.transpose(1, 2).contiguous().transpose(1, 2)
        params[-1] = (wh, torch.cat([bh[..., :d] * scale + shift, bh[..., d:]], -1))
        self.params = params
        self.log_scale = scale.log()
        self.members = len(params[0][0])

    def predict(self, state: torch.Tensor, action: torch.Tensor, context: torch.Tensor | None):
        """``(mean, std, term_prob)`` of the next state, as `ProbabilisticEnsemble.forward`."""
        model = self.model
        x = model.inputs(state, context, action)
        if model._member_major(x, self.members):
            activation = IN_PLACE_ACTIVATIONS[type(model.activation)]
            out = member_by_member(x, self.params, range(self.members), activation)
        else:
            h = x
            for weight, bias in self.params[:-1]:
                h = activate(model.activation, torch.baddbmm(bias, h, weight))
            out = torch.baddbmm(self.params[-1][1], h, self.params[-1][0])
        d = model.state_dim
        std = torch.add(self.log_scale, model.bounded_logvar(out[..., d : 2 * d]), alpha=0.5).exp_()
        mean = out[..., :d]
        if model.predict_delta:
            mean = mean + state
        return mean, std, torch.sigmoid(out[..., 2 * d])

    def step(self, state: torch.Tensor, action: torch.Tensor, context: torch.Tensor | None = None, *,
             deterministic: bool = False, generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
             particles: int = 1):
        """`ProbabilisticEnsemble.step` with the prepared weights."""
        check_particles(particles, f"{type(self).__name__}.step")
        mean, std, term = self.predict(state, action, context)
        return draw_step(mean, std, term, particles=particles, deterministic=deterministic, generator=generator,
                         noise=noise)
