"""`TianshouLevel`: any off-policy Tianshou 2.x algorithm as a level of a hierarchy.

The algorithm is built from a config (a dict or a Hydra/OmegaConf config of ``_target_``
entries with placeholders filled from the level's specs; the layout is documented in
`torchrl_layered.levels.tianshou_config`). The level acts with the algorithm's policy, keeps
its semi-MDP transitions in a TorchRL replay buffer, and at each update hands a sampled batch
to the algorithm's own update steps as a tianshou ``ReplayBuffer`` (for tianshou's DQN and SAC,
the same steps run on tensors: `tianshou_direct`). Targets are discounted per transition with
``gamma ** duration`` (`SMDPReturn`), so the level can sit above others.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from tianshou.algorithm.algorithm_base import Algorithm, Policy
from tianshou.data import Batch, ReplayBuffer, to_numpy, to_torch_as
from tianshou.utils.lagged_network import LaggedNetworkCollection
from tianshou.utils.torch_utils import policy_within_training_step, torch_train_mode
from torchrl.data import Bounded, Categorical, Composite, LazyTensorStorage, TensorDictReplayBuffer, TensorSpec

from torchrl_layered.keys import NEXT_DURATION
from torchrl_layered.levels.base import Level
from torchrl_layered.levels.tianshou_config import build, check_config, spec_placeholders, to_plain_config
from torchrl_layered.levels.tianshou_direct import Columns, direct_act, direct_update, smdp_returns
from torchrl_layered.levels.tianshou_forward import lighten_forwards
from torchrl_layered.levels.tianshou_polyak import ForeachPolyak
from torchrl_layered.objectives.discount import DiscountPer, check_discount_per


class SMDPReturn:
    """Tianshou's TD target for semi-MDP transitions: ``r + gamma ** duration * (1 - terminated) * Q'(s')``.

    It replaces `Algorithm.compute_nstep_return` on one algorithm instance, the function that
    the ``_preprocess_batch`` of SAC, TD3, DDPG, DQN (and their variants) call to turn their
    own target values ``Q'(s')`` into returns; so each algorithm keeps its target (twin-critic
    minimum and entropy term, double-DQN, ...) and only the discount changes. ``duration`` (env
    steps of the option) is read from the batch's ``info``; a reward is the option's summed
    reward. ``calls`` counts uses, so a level can tell an algorithm that never calls it.
    ``discount_per="option"`` discounts by ``gamma`` per option instead (`objectives.discount`).
    """

    def __init__(self, discount_per: DiscountPer = "env_step") -> None:
        self.calls = 0
        self.discount_per = discount_per

    def __call__(self, batch: Batch, buffer: ReplayBuffer, indices: np.ndarray, target_q_fn, gamma: float = 0.99,
                 n_step: int = 1) -> Batch:
        if n_step != 1:
            raise ValueError(f"semi-MDP targets need n_step_return_horizon == 1; got {n_step}")
        self.calls += 1
        with torch.no_grad():
            target_q = target_q_fn(buffer, indices)
        reward = to_torch_as(np.asarray(batch.rew, dtype=np.float32), target_q)
        duration = to_torch_as(np.asarray(batch.info.duration, dtype=np.float32), target_q)
        terminated = torch.as_tensor(np.asarray(batch.terminated, dtype=bool), device=target_q.device)
        # the semi-MDP TD target: the next value is discounted over the option's duration
        batch.returns = smdp_returns(reward, duration, terminated, target_q, gamma, self.discount_per)
        if hasattr(batch, "weight"):
            batch.weight = to_torch_as(batch.weight, target_q)
        return batch


def _load_tianshou_optimizers(module: Algorithm, state_dict: dict, prefix: str, *args) -> None:
    """Loads the optimiser states that tianshou's ``Algorithm.state_dict`` adds under ``_optimizers``.

    ``Algorithm.load_state_dict`` restores them only when the algorithm is loaded on its own;
    as a submodule of a level, this pre-hook does it (and removes the non-tensor entry).
    """
    states = state_dict.pop(prefix + Algorithm._STATE_DICT_KEY_OPTIMIZERS, None)
    if states is not None:
        for optimizer, state in zip(module._optimizers, states, strict=True):
            optimizer.load_state_dict(state)


#: Transitions drawn from the replay buffer at once for a round of updates (then split per update).
_ROWS_PER_DRAW = 16_384


def _total(values: list) -> float:
    """The sum of one loss over a round: floats (tianshou's path), or tensors (direct updates) read in one transfer."""
    if values and isinstance(values[0], torch.Tensor):
        return float(torch.stack(values).cpu().double().sum())
    return float(sum(values))


def _tianshou_buffer(arrays: dict[str, np.ndarray]) -> ReplayBuffer:
    """A tianshou ``ReplayBuffer`` holding the columns of `TianshouLevel._tianshou_arrays` in order."""
    data = {key: value for key, value in arrays.items() if key != "duration"}
    buffer = ReplayBuffer.from_data(**data)
    buffer.set_batch(Batch(**data, info=Batch(duration=arrays["duration"])))
    return buffer


class TianshouLevel(Level):
    """A level that acts and learns with a Tianshou 2.x off-policy algorithm (SAC, TD3, DQN, ...).

    It builds the algorithm at `initialize` from ``tianshou_config`` (see
    `torchrl_layered.levels.tianshou_config` for the layout and the placeholders). The policy
    sees one flat vector: the observation, then the level input (one-hot when discrete). Its
    raw action (e.g. SAC's tanh-squashed ``[-1, 1]``) is mapped to the action spec with
    ``policy.map_action`` and stored raw, as tianshou expects. Training mode explores
    (stochastic policy, exploration noise, epsilon-greedy with the config's epsilon schedule);
    eval mode or a deterministic exploration type acts deterministically and stores nothing.

    Learning: the level's semi-MDP transitions go to a TorchRL ``TensorDictReplayBuffer``.
    Every ``update_interval`` new transitions it runs ``num_updates`` updates, once the buffer
    holds ``batch_size`` transitions and ``warm_up_steps`` env steps have passed (actions are
    uniformly random until then). A round of updates draws all its batches at once, converts
    them once (as `to_tianshou_buffer`) and runs the algorithm's update steps on each inside
    one training step (DQN and SAC on tensors, `tianshou_direct`); TD targets
    use ``gamma ** duration`` (`SMDPReturn`). On-policy algorithms (PPO, A2C, ...) are refused.

    Args:
        tianshou_config: a dict or OmegaConf config, e.g. `default_sac_config()`.
        buffer_size: capacity of the replay buffer, in transitions.
        batch_size: transitions per update.
        update_interval: new transitions between update rounds.
        num_updates: updates per round.
        warm_up_steps: env steps of uniformly random actions before acting with the policy
            and learning.
        learning_steps: stop learning once the level's stored transitions cover this many env
            steps (it goes on acting with what it learned); None: never stop.
        discount_per: ``"env_step"``: an option bootstraps with ``gamma ** duration`` (the
            algorithm's ``gamma`` is per env step), or ``"option"``: ``gamma`` per option.
        direct_updates: run tianshou's DQN and SAC updates and acting on tensors, without
            tianshou's ``Batch`` routing (`torchrl_layered.levels.tianshou_direct`; the same
            parameters and actions, bit for bit, in less time); False, or any other algorithm:
            tianshou's own path.
        input_spec: the spec of the option it accepts from a parent (``None``: top only).
        control_interval: own steps before it hands control back (``None``: episode end).

    Example:
        >>> level = TianshouLevel(default_sac_config(), batch_size=128)
        >>> hierarchy = Hierarchy([level], env=make_env("Pendulum-v1", 4))
    """

    supported_action_specs = (Bounded, Categorical)

    def __init__(
        self,
        tianshou_config: Any,
        *,
        buffer_size: int = 100_000,
        batch_size: int = 256,
        update_interval: int = 1,
        num_updates: int = 1,
        warm_up_steps: int = 0,
        learning_steps: int | None = None,
        discount_per: DiscountPer = "env_step",
        direct_updates: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(direct_updates, bool):
            raise TypeError(f"TianshouLevel needs a bool direct_updates; got {direct_updates!r}")
        self.direct_updates = direct_updates
        self.discount_per = check_discount_per(discount_per, "TianshouLevel")
        for name, value, low in [("buffer_size", buffer_size, 1), ("batch_size", batch_size, 1)]:
            if not isinstance(value, int) or value < low:
                raise ValueError(f"TianshouLevel needs an int {name} >= {low}; got {value!r}")
        self.tianshou_config = to_plain_config(tianshou_config)
        self.plan = check_config(self.tianshou_config)
        self.buffer_size, self.batch_size = buffer_size, batch_size
        self.set_update_schedule(warm_up_steps=warm_up_steps, update_interval=update_interval, num_updates=num_updates,
                                 learning_steps=learning_steps)
        self.components: dict[str, Any] = {}

    # ---------------------------------------------------------------- build
    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec, parent: Level | None = None) -> None:
        super().initialize(observation_spec, action_spec, parent)
        if isinstance(observation_spec, Composite):
            raise TypeError("TianshouLevel needs a single-tensor observation spec; map the observation with an obs_map")
        self._level_input_spec = None if parent is None else self.get_input_spec()
        values = spec_placeholders(observation_spec, action_spec, self._level_input_spec)
        algorithm, built = build(self.tianshou_config, self.plan, values)
        if not isinstance(algorithm, Algorithm):
            raise TypeError(f"tianshou_config.algorithm built a {type(algorithm).__name__}, not a tianshou Algorithm")
        if self.plan.exploration is not None and not hasattr(algorithm.policy, "set_eps_training"):
            raise ValueError(
                f"tianshou_config.exploration sets an epsilon schedule, but {type(algorithm.policy).__name__} has no "
                "epsilon-greedy exploration; remove the section (or use e.g. DiscreteQLearningPolicy)"
            )
        device = action_spec.device if action_spec.device is not None else torch.device("cpu")
        self.algorithm = algorithm.to(device)
        self.components = built
        self._smdp_return = SMDPReturn(self.discount_per)
        # the algorithm's _preprocess_batch calls self.compute_nstep_return: this instance gets SMDP targets
        self.algorithm.compute_nstep_return = self._smdp_return
        self.algorithm.register_load_state_dict_pre_hook(_load_tianshou_optimizers)
        lagged = getattr(self.algorithm, "_lagged_networks", None)
        if isinstance(lagged, LaggedNetworkCollection):  # soft target updates in one fused op
            ForeachPolyak(lagged)
        lighten_forwards(self.algorithm)
        self._direct_update = direct_update(self.algorithm, self.discount_per) if self.direct_updates else None
        self._direct_act = direct_act(self.algorithm) if self.direct_updates else None
        # no default batch size: `learn` draws several updates' batches at once
        self.replay_buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(self.buffer_size))

    @property
    def policy(self) -> Policy:
        """The tianshou policy the level acts with (``algorithm.policy``)."""
        return self.algorithm.policy

    # ------------------------------------------------------------------ act
    def policy_input(self, observation: torch.Tensor, level_input: torch.Tensor | None = None) -> torch.Tensor:
        """The flat float vector the networks see: ``[n, obs_dim]`` (observation, then level input)."""
        features = observation.reshape(observation.shape[0], -1).float()
        if self._level_input_spec is None:
            return features
        return torch.cat([features, self.level_input_features(level_input)], -1)

    def get_action(self, tensordict: TensorDictBase) -> torch.Tensor:
        obs = self.policy_input(tensordict.get("observation"), tensordict.get("level_input", None))
        n = obs.shape[0]
        deterministic = self.deterministic
        if not deterministic and not self.warmed_up:
            return self.action_spec.rand((n,)).to(obs.device)
        raw = self._raw_action(obs, explore=not deterministic)
        action = torch.as_tensor(self.policy.map_action(raw), device=obs.device)
        return action.to(self.action_spec.dtype).reshape(n, *self.action_spec.shape)

    @torch.no_grad()
    def _raw_action(self, obs: torch.Tensor, explore: bool) -> np.ndarray:
        policy = self.policy
        epsilon = self.epsilon if explore else None
        if epsilon is not None:
            policy.set_eps_training(epsilon)
        if self._direct_act is not None:
            return self._direct_act(obs, explore)
        batch = Batch(obs=obs, info={})
        if explore:  # inside a training step: sampled actions, exploration noise / epsilon
            with policy_within_training_step(policy), torch_train_mode(policy, False):
                return policy.add_exploration_noise(to_numpy(policy(batch).act), batch)
        # outside a training step and with deterministic_eval forced on: the mode / argmax
        forced = hasattr(policy, "deterministic_eval")
        saved = getattr(policy, "deterministic_eval", None)
        try:
            if forced:
                policy.deterministic_eval = True
            with policy_within_training_step(policy, enabled=False), torch_train_mode(policy, False):
                return to_numpy(policy(batch).act)
        finally:
            if forced:
                policy.deterministic_eval = saved

    @property
    def epsilon(self) -> float | None:
        """The current epsilon of the config's ``exploration`` schedule (``None`` without one)."""
        schedule = self.plan.exploration
        if schedule is None:
            return None
        decay = schedule["eps_decay_steps"]
        progress = 1.0 if decay <= 0 else min(1.0, self.env_steps / decay)
        return schedule["eps_start"] + progress * (schedule["eps_end"] - schedule["eps_start"])

    # ---------------------------------------------------------------- learn
    def raw_action(self, action: torch.Tensor) -> torch.Tensor:
        """The policy's own action for a spec action (``policy.map_action_inverse``), as tianshou stores it."""
        if isinstance(self.action_spec, Categorical):
            return action
        raw = self.policy.map_action_inverse(action.detach().cpu().numpy().astype(np.float32))
        if self.policy.action_scaling:
            raw = np.clip(raw, -1.0, 1.0)  # float round-off of the scaling
        return torch.as_tensor(raw, dtype=torch.float32, device=action.device)

    def extend(self, transitions: TensorDictBase) -> None:
        keys = ["observation", "action", "next"] + ([] if self._level_input_spec is None else ["level_input"])
        data = transitions.select(*keys)
        data.set("raw_action", self.raw_action(data.get("action")))
        self.replay_buffer.extend(data)

    def to_tianshou_buffer(self, transitions: TensorDictBase) -> ReplayBuffer:
        """The transitions as a tianshou ``ReplayBuffer`` (in order; ``info.duration`` holds the durations).

        The next observation keeps the transition's level input: a level bootstraps with the
        option it was given.
        """
        return _tianshou_buffer(self._tianshou_arrays(transitions))

    def _tianshou_arrays(self, transitions: TensorDictBase) -> dict[str, np.ndarray]:
        """The transitions' columns as numpy arrays, in tianshou's names (``duration``: the option's)."""
        n = transitions.shape[0]
        columns = {name: value.detach().cpu().numpy() for name, value in vars(self._columns(transitions)).items()}
        for key in ("truncated", "done"):
            columns[key] = transitions.get(("next", key)).reshape(n).detach().cpu().numpy().astype(bool)
        return columns

    def targets(self, transitions: TensorDictBase) -> torch.Tensor:
        """The TD targets ``[n, 1]`` the algorithm's critic would regress onto for these transitions."""
        buffer = self.to_tianshou_buffer(transitions)
        batch, indices = buffer.sample(0)
        with policy_within_training_step(self.policy), torch.no_grad():
            batch = self.algorithm._preprocess_batch(batch, buffer, indices)
        return torch.as_tensor(batch.returns).reshape(transitions.shape[0], -1)

    def learn(self) -> dict[str, float]:
        num = self.updates_due(ready=self.replay_buffer is not None and len(self.replay_buffer) >= self.batch_size)
        if num <= 0:
            return {}
        values: dict[str, list] = {}
        per_draw = max(1, _ROWS_PER_DRAW // self.batch_size)
        # the training step and train mode are entered once for the round, not once per update
        with policy_within_training_step(self.policy), torch_train_mode(self.algorithm):
            for first in range(0, num, per_draw):
                # one draw and one conversion for several updates' batches: the sampler draws
                # uniformly with replacement, so a draw of k batches is k independent batches
                count = min(per_draw, num - first)
                drawn = self.replay_buffer.sample(batch_size=count * self.batch_size)
                for stats in self._round(drawn, count):
                    for key, value in stats.items():
                        values.setdefault(key, []).append(value)
        metrics = {key: _total(value) / num for key, value in values.items()}
        if self.epsilon is not None:
            metrics["epsilon"] = self.epsilon
        return metrics

    def _round(self, drawn: TensorDictBase, count: int):
        """Runs ``count`` updates on consecutive ``batch_size`` rows of ``drawn``, yielding each one's losses."""
        size = self.batch_size
        if self._direct_update is not None:
            columns = self._columns(drawn)
            for i in range(count):
                yield self._direct_update(columns.rows(i * size, (i + 1) * size))
            return
        arrays = self._tianshou_arrays(drawn)
        options = bool((arrays["duration"] != 1).any())
        buffer = _tianshou_buffer(arrays)
        for i in range(count):
            yield self._update(buffer, np.arange(i * size, (i + 1) * size), options)

    def _columns(self, transitions: TensorDictBase) -> Columns:
        """The transitions as the tensors of a direct update (`tianshou_direct.Columns`), on the level's device."""
        n = transitions.shape[0]
        level_input = transitions.get("level_input", None)
        action = transitions.get("raw_action")
        discrete = isinstance(self.action_spec, Categorical)
        return Columns(
            obs=self.policy_input(transitions.get("observation"), level_input),
            act=action.reshape(n).long() if discrete else action.float(),
            rew=transitions.get(("next", "reward")).reshape(n).float(),
            terminated=transitions.get(("next", "terminated")).reshape(n).bool(),
            obs_next=self.policy_input(transitions.get(("next", "observation")), level_input),
            duration=transitions.get(NEXT_DURATION).reshape(n).float(),
        )

    def _update(self, buffer: ReplayBuffer, indices: np.ndarray, options: bool) -> dict[str, float]:
        """One update of the algorithm on ``buffer[indices]``; ``options``: some durations are not 1.

        The steps of tianshou's ``Algorithm.update`` (pre-process: the TD targets; the
        algorithm's own update; post-process; learning-rate schedulers), run inside the
        round's training step and train mode (`learn`).
        """
        algorithm = self.algorithm
        calls = self._smdp_return.calls
        batch = algorithm._preprocess_batch(buffer[indices], buffer, indices)
        stats = algorithm._update_with_batch(batch)
        algorithm._postprocess_batch(batch, buffer, indices)
        for scheduler in algorithm.lr_schedulers:
            scheduler.step()
        if self._smdp_return.calls == calls and options:
            raise RuntimeError(
                f"{type(algorithm).__name__} does not compute its targets with compute_nstep_return, so "
                "TianshouLevel cannot discount them with gamma ** duration; use it only as the lowest level "
                "or choose SAC, TD3, DDPG, DQN or another algorithm that does"
            )
        return stats.get_loss_stats_dict()

    # ---------------------------------------------------------------- state
    def _module_optimizers(self) -> list[torch.optim.Optimizer]:
        """Optimisers that tianshou keeps outside ``Algorithm._optimizers`` (e.g. `AutoAlpha`'s)."""
        if getattr(self, "algorithm", None) is None:
            return []
        return [m._optim for m in self.algorithm.modules() if isinstance(getattr(m, "_optim", None), torch.optim.Optimizer)]

    def named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        # the algorithm's own optimisers travel in its state dict (`_load_tianshou_optimizers`)
        return {f"module_optimizer_{i}": optimizer for i, optimizer in enumerate(self._module_optimizers())}

    def set_extra_state(self, state: dict) -> None:
        if "module_optimizers" in state:  # a checkpoint written before the optimisers were named
            state = {**state, "optimizers": {f"module_optimizer_{i}": saved
                                             for i, saved in enumerate(state["module_optimizers"])}}
        super().set_extra_state(state)
