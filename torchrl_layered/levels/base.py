"""The `Level` base class: one layer of a hierarchy, as a TensorDict module.

A level reads an observation (and, below the top, the option its parent chose), writes an
action and a ``level_done`` flag. The base class does all the masking and bookkeeping so that
a custom level only says how to act (``get_action``) and, optionally, when to hand control
back (``is_done``), how to reward itself (``get_reward``), how to store (``extend``) and how
to learn (``learn``).
"""
from __future__ import annotations

import difflib
import functools
import inspect
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterator

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torchrl.data import Categorical, Composite, RandomSampler, ReplayBuffer, TensorDictReplayBuffer, TensorSpec
from torchrl.envs.utils import ExplorationType, exploration_type

from torchrl_layered.keys import ACTING, INSTANCE, NEXT_DURATION, STEPS, TRANSITION_STATE, stacked_key
from torchrl_layered.levels.learning import UpdateSchedule
from torchrl_layered.levels.validation import NONFINITE_POLICIES, InvalidDataError, NonFinitePolicy, checked_transitions
from torchrl_layered.unchecked import unchecked_tensordict

_DETERMINISTIC_TYPES = (
    ExplorationType.DETERMINISTIC,
    ExplorationType.MODE,
    ExplorationType.MEAN,
    ExplorationType.MEDIAN,
)


@dataclass
class LevelKeys:
    """Tensordict keys a level reads and writes; remap them with `Level.set_keys`.

    Attributes:
        observation: the env observation the level sees (before its observation map).
        level_input: the option chosen by the parent level (absent for a top level).
        action: where the level writes its action (the env action for the lowest level).
        level_done: the level's hand-back flag, held between its decisions; in a hierarchy
            a ``[*B, num_levels]`` tensor of which the level owns column ``state_index``.
        acting: ``[*B, num_levels]``: which levels act at this step (`HierarchyTransform`).
        steps: ``[*B, num_levels]``: own steps in the current control period.
        start_observation: the mapped observation at the start of the current option.
        state: the level's own per-instance entries (`get_state_spec`), e.g. a planner's warm
            start; carried between steps and zeroed when the instance's episode restarts.
    """

    observation: NestedKey = "observation"
    level_input: NestedKey = "level_input"
    action: NestedKey = "action"
    level_done: NestedKey = "level_done"
    acting: NestedKey = stacked_key(ACTING)
    steps: NestedKey = stacked_key(STEPS)
    start_observation: NestedKey = "start_observation"
    state: NestedKey = TRANSITION_STATE


@functools.lru_cache(maxsize=64)
def _instances(n: int, device: torch.device) -> torch.Tensor:
    """``arange(n)``, the row index ``get_action`` sees as ``"instance"``: built once per size and
    device, so it is shared between calls (read it; write into a copy)."""
    return torch.arange(n, device=device)


def _spellings(cls: type, attribute: str = "layeredrl_spellings") -> dict[str, str]:
    merged: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        merged.update(klass.__dict__.get(attribute, {}))
    return merged


def _accepting_spellings(init: Callable) -> Callable:
    """``init`` with LayeredRL's spellings of its class's arguments renamed to ours."""

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        for theirs, ours in _spellings(type(self)).items():
            if theirs in kwargs:
                if ours in kwargs:
                    raise TypeError(f"{type(self).__name__} got both {theirs}= and {ours}=, two names of one argument")
                kwargs[ours] = kwargs.pop(theirs)
        init(self, *args, **kwargs)

    return __init__


def _unknown_arguments(cls: type, unknown: dict[str, Any]) -> str:
    """``X got an unknown argument 'y'; did you mean 'z'?`` over every argument the class's constructors take."""
    known = set(_spellings(cls))
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            known |= {name for name, p in inspect.signature(init).parameters.items()
                      if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    for settings in cls.keyword_settings():
        known |= {f.name for f in fields(settings)}
    hints = _spellings(cls, "layeredrl_hints")
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = hints.get(name) or (f"did you mean {close[0]!r}?" if close else None)
        parts.append(f"{name!r}" + (f" ({hint})" if hint else ""))
    return (f"{cls.__name__} got unknown argument{'s' if len(parts) > 1 else ''} {', '.join(parts)}; "
            f"it takes {', '.join(sorted(known))}")


class Level(TensorDictModuleBase):
    """Base class of every level; subclass it to write a custom level.

    A subclass overrides ``get_action`` (required) and, where the defaults don't fit,
    ``get_input_spec``, ``initialize``, ``is_done``, ``get_reward``, ``extend`` and
    ``learn``. It never overrides ``forward``: the base class computes the level only for the
    rows where it acts and holds its previous output elsewhere.

    Args:
        input_spec: the spec of the option this level expects from its parent; what
            `get_input_spec` returns by default. ``None`` means the level can only be the top.
        control_interval: hand control back to the parent after this many own steps;
            ``None`` means only at the end of the episode. Ignored on the top level.
        on_nonfinite: what `observe` does with transitions holding a NaN or inf observation,
            level input, action or reward: ``"raise"`` an `InvalidDataError` and store nothing
            (default), or ``"drop"`` those rows with a warning.
        refresh_when_child_freezes: empty the level's replay buffer when the level below it
            stops learning (its ``learning_steps``, `learning_done`): the stored transitions
            describe options the child no longer takes, so the level learns from then on only
            on the options it will plan with (`Hierarchy.extend`).

    Example:
        >>> class GoRight(Level):
        ...     def get_action(self, td):
        ...         return torch.ones(td.shape[0], *self.action_spec.shape)
    """

    #: Action specs the level can produce; `Hierarchy` refuses other kinds at build time.
    supported_action_specs: tuple[type, ...] = (TensorSpec,)
    #: LayeredRL's spellings of constructor arguments, ``{theirs: ours}``, accepted as ours
    #: (subclasses add theirs; the README's "Coming from LayeredRL" lists them all).
    layeredrl_spellings: dict[str, str] = {}
    #: LayeredRL arguments with no one-to-one equivalent, ``{theirs: what to pass instead}``.
    layeredrl_hints: dict[str, str] = {}

    @classmethod
    def keyword_settings(cls) -> tuple[type, ...]:
        """Dataclasses whose fields the constructor also takes as keyword arguments (e.g. a reward's settings)."""
        return ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _accepting_spellings(init)

    def __init__(self, *, input_spec: TensorSpec | None = None, control_interval: int | None = None,
                 on_nonfinite: NonFinitePolicy = "raise", refresh_when_child_freezes: bool = False, **unknown):
        if unknown:
            raise TypeError(_unknown_arguments(type(self), unknown))
        super().__init__()
        if control_interval is not None and (not isinstance(control_interval, int) or control_interval < 1):
            raise ValueError(f"control_interval must be a positive int or None; got {control_interval!r}")
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}; got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        if not isinstance(refresh_when_child_freezes, bool):
            raise TypeError(f"refresh_when_child_freezes must be a bool; got {refresh_when_child_freezes!r}")
        self.refresh_when_child_freezes = refresh_when_child_freezes
        self._input_spec = input_spec
        self.control_interval = control_interval
        self.observation_spec: TensorSpec | None = None
        self.action_spec: TensorSpec | None = None
        self.obs_map: Callable[[torch.Tensor], torch.Tensor] | None = None
        #: True when the level has no parent (it reads no ``level_input``).
        self.is_top = True
        #: True when the level acts at every env step (the lowest level of a hierarchy).
        self.always_acts = False
        #: The level's column in the hierarchy's stacked state; ``None`` for a plain policy.
        self.state_index: int | None = None
        # buffers, not ints: collectors copy buffers to their worker processes with the weights
        self.register_buffer("transition_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("env_step_count", torch.zeros((), dtype=torch.long))
        self._parent_ref: list[Level] = []
        self.tensor_keys = LevelKeys()
        self._update_in_out_keys()
        # learning plumbing, used by the levels that learn (`set_update_schedule`, `named_optimizers`)
        #: The level's TorchRL replay buffer, built by a learning level in `initialize`; ``None`` otherwise.
        self.replay_buffer: ReplayBuffer | None = None
        #: When the level takes gradient steps (`set_update_schedule`); ``None`` for a level that does not learn.
        self.schedule: UpdateSchedule | None = None
        #: Env steps of the level's stored transitions before it acts with its model and learns.
        self.warm_up_steps = 0
        #: Env steps of the level's stored transitions after which it stops learning (None: never).
        self.learning_steps: int | None = None
        #: Gradient steps the schedule has called for (a non-finite step is counted, not applied).
        self.num_gradient_updates = 0

    # ----------------------------------------------------------------------- keys
    def set_keys(self, **kwargs: NestedKey) -> Level:
        """Remaps the tensordict keys of the level (names as in `LevelKeys`)."""
        names = {f.name for f in fields(LevelKeys)}
        for name, key in kwargs.items():
            if name not in names:
                raise ValueError(f"{type(self).__name__}.set_keys got unknown key name {name!r}; known: {sorted(names)}")
            setattr(self.tensor_keys, name, key)
        self._update_in_out_keys()
        return self

    def _update_in_out_keys(self) -> None:
        keys = self.tensor_keys
        self.in_keys = [keys.observation] + ([] if self.is_top else [keys.level_input])
        self.out_keys = [keys.action, keys.level_done]
        if self.state_index is not None and not self.always_acts:
            self.out_keys = self.out_keys + [keys.start_observation]
        if self.initialized and self.get_state_spec() is not None:
            self.out_keys = self.out_keys + [keys.state]

    # ---------------------------------------------------------------- build hooks
    @property
    def parent(self) -> Level | None:
        """The level above this one, or ``None`` (not a submodule, to keep state dicts flat)."""
        return self._parent_ref[0] if self._parent_ref else None

    def get_input_spec(self) -> TensorSpec | None:
        """The spec of the option this level expects from its parent (``None``: top only).

        It must not depend on `initialize`, because the hierarchy asks for it before.
        """
        return self._input_spec

    def get_state_spec(self) -> Composite | None:
        """Per-instance entries the level carries between its steps (unbatched), or ``None``.

        ``get_action`` finds them in ``tensordict["state"]`` (acting rows) and may overwrite
        them there; the hierarchy carries them and zeroes them when an episode restarts.
        Called after `initialize`.
        """
        return None

    def initialize(self, observation_spec: TensorSpec, action_spec: TensorSpec, parent: Level | None = None) -> None:
        """Receives the (mapped, unbatched) observation spec and the action spec to produce.

        Subclasses build their networks here and call ``super().initialize(...)`` first.
        """
        if not isinstance(action_spec, self.supported_action_specs):
            kinds = ", ".join(t.__name__ for t in self.supported_action_specs)
            raise TypeError(
                f"{type(self).__name__} cannot produce a {type(action_spec).__name__} action; it supports {kinds}"
            )
        self.observation_spec = observation_spec
        self.action_spec = action_spec
        self._parent_ref = [parent] if parent is not None else []
        self.is_top = parent is None
        self._update_in_out_keys()

    def attach(self, observation_spec: TensorSpec, action_spec: TensorSpec, parent: Level | None = None,
               num_instances: int = 1) -> None:
        """How a `Hierarchy` sets the level up for its place: `initialize` (``num_instances``: env instances)."""
        self.initialize(observation_spec, action_spec, parent)

    @property
    def n_transitions(self) -> int:
        """Semi-MDP transitions the level has stored (its own steps, summed over instances)."""
        return int(self.transition_count)

    @n_transitions.setter
    def n_transitions(self, value: int) -> None:
        self.transition_count.fill_(value)

    @property
    def env_steps(self) -> int:
        """Env steps covered by the level's stored transitions: the clock of every ``warm_up_steps``."""
        return int(self.env_step_count)

    @env_steps.setter
    def env_steps(self, value: int) -> None:
        self.env_step_count.fill_(value)

    @property
    def mean_duration(self) -> float:
        """Mean env steps per option over the stored transitions (1 before any)."""
        return self.env_steps / self.n_transitions if self.n_transitions else 1.0

    @property
    def device(self) -> torch.device:
        """Where the level's networks and counters live (it follows ``.to()``)."""
        return self.transition_count.device

    # --------------------------------------------------------------- learning
    def set_update_schedule(self, *, warm_up_steps: int, update_interval: int, num_updates: int,
                            learning_steps: int | None = None) -> None:
        """Makes the level learn: ``num_updates`` gradient steps per ``update_interval`` transitions,
        once its stored transitions cover ``warm_up_steps`` env steps and until they cover
        ``learning_steps`` (None: for ever) (`updates_due`)."""
        checks = [("warm_up_steps", warm_up_steps, 0), ("update_interval", update_interval, 1),
                  ("num_updates", num_updates, 0)]
        if learning_steps is not None:
            checks.append(("learning_steps", learning_steps, warm_up_steps))
        for name, value, low in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{type(self).__name__} needs an int {name} >= {low}"
                                 f"{' (its warm_up_steps) or None' if name == 'learning_steps' else ''}; got {value!r}")
        self.warm_up_steps = warm_up_steps
        self.learning_steps = learning_steps
        self.schedule = UpdateSchedule(update_interval, num_updates)

    @property
    def learning_done(self) -> bool:
        """Whether the level's stored transitions cover its ``learning_steps``: it acts, but learns no more."""
        return self.learning_steps is not None and self.env_steps >= self.learning_steps

    @property
    def warmed_up(self) -> bool:
        """Whether the level's stored transitions cover its ``warm_up_steps`` env steps."""
        return self.env_steps >= self.warm_up_steps

    def updates_due(self, ready: bool = True) -> int:
        """The gradient steps due now by the schedule, counted in ``num_gradient_updates``.

        0 during the warm-up or while ``ready`` is False (e.g. a buffer too small to
        sample), and those transitions are not owed updates later (`UpdateSchedule`); 0 for
        good once the level's ``learning_steps`` are covered (`learning_done`).
        """
        if self.schedule is None or self.learning_done:
            return 0
        num = self.schedule.due(self.n_transitions, self.warmed_up and ready)
        self.num_gradient_updates += num
        return num

    def named_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The level's optimisers by name; a checkpoint keeps their states (`get_extra_state`)."""
        return {}

    def store(self, data: TensorDictBase) -> None:
        """Adds ``data`` to the level's replay buffer, on the level's device.

        Collector batches mix devices (the env's data, the collector's own ids on CPU); a
        storage built with ``device="auto"`` then lives where the level computes.
        """
        self._buffer().extend(data.to(self.device))

    def sample_buffer(self) -> TensorDictBase:
        """A batch from the level's replay buffer, on the level's device (also after a later ``.to()``)."""
        return self._buffer().sample().to(self.device)

    def sample_batches(self, num: int, group: int = 64) -> Iterator[TensorDictBase]:
        """``num`` batches from the level's replay buffer (each as `sample_buffer`), for a round of updates.

        With TorchRL's uniform ``RandomSampler`` (draws with replacement, the batches are i.i.d.)
        on a flat storage and no buffer transform, up to ``group`` batches at a time are drawn
        through the sampler at once and read in one storage access: ~0.01 ms a batch against
        ~0.1 ms for a ``sample()`` call, and never more than ``group`` batches in memory. Any
        other buffer is sampled batch by batch as the updates go, so a sampler that learns from
        them (priorities) sees each one.
        """
        for name, value, least in (("num", num, 0), ("group", group, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{type(self).__name__}.sample_batches needs an int {name} >= {least}; got {value!r}")
        # checked here, at the call; the batches come from a generator, drawn as they are asked for
        return self._batches(self._buffer(), num, group)

    def _batches(self, buffer: ReplayBuffer, num: int, group: int) -> Iterator[TensorDictBase]:
        size = buffer.batch_size
        if not (size and type(buffer.sampler) is RandomSampler and not len(buffer.transform)
                and buffer.storage.ndim == 1):
            yield from (self.sample_buffer() for _ in range(num))
            return
        for start in range(0, num, group):
            count = min(group, num - start)
            index, _ = buffer.sampler.sample(buffer.storage, count * size)
            data = buffer.storage[index]
            if isinstance(buffer, TensorDictReplayBuffer):  # its ``sample`` records where each row came from
                data.set("index", index)
            yield from data.to(self.device).reshape(count, size).unbind(0)

    def _buffer(self) -> ReplayBuffer:
        if self.replay_buffer is None:
            raise RuntimeError(f"{type(self).__name__} has no replay buffer: a learning level builds one in initialize")
        return self.replay_buffer

    @property
    def initialized(self) -> bool:
        return self.action_spec is not None

    @property
    def level_input_dim(self) -> int:
        """Size of `level_input_features`: 0 on the top level, ``n`` for a categorical input (one-hot)."""
        spec = None if self.is_top else self.get_input_spec()
        if spec is None:
            return 0
        if isinstance(spec, Categorical):
            return int(spec.n)
        return torch.Size(spec.shape).numel()

    def level_input_features(self, level_input: torch.Tensor | None) -> torch.Tensor | None:
        """The level input as a flat float vector ``[n, level_input_dim]`` (one-hot if categorical); None at the top."""
        if not self.level_input_dim:
            return None
        n = level_input.shape[0]
        if isinstance(self.get_input_spec(), Categorical):
            level_input = torch.nn.functional.one_hot(level_input.long().reshape(n), self.level_input_dim)
        return level_input.reshape(n, -1).float()

    # ----------------------------------------------------------------- act hooks
    def get_action(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Returns actions ``[n, *action_spec.shape]`` for the ``n`` acting rows.

        ``tensordict`` holds ``observation`` (mapped), ``level_input`` (below the top),
        ``steps`` (own steps since the level got control, this one included) and ``instance``
        (each row's index among the env instances; read-only, it is reused between calls).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement get_action(tensordict)")

    def is_done(self, tensordict: TensorDictBase) -> torch.Tensor:
        """Whether to hand control back once the option just given below ends, ``[n, 1]``."""
        steps = tensordict.get("steps")
        if self.control_interval is None:
            return torch.zeros_like(steps, dtype=torch.bool)
        return steps >= self.control_interval

    @property
    def _never_done(self) -> bool:
        """The default `is_done` without a control interval: never hands control back."""
        return self.control_interval is None and type(self).is_done is Level.is_done

    @property
    def deterministic(self) -> bool:
        """True in eval mode or under a deterministic `ExplorationType`: act without noise."""
        return (not self.training) or exploration_type() in _DETERMINISTIC_TYPES

    # --------------------------------------------------------------- learn hooks
    def get_reward(self, transitions: TensorDictBase) -> torch.Tensor:
        """The level's reward for its semi-MDP transitions; default: the summed env reward."""
        return transitions.get(("next", "reward"))

    def _transition_reward(self, transitions: TensorDictBase) -> torch.Tensor:
        """`get_reward` (a hook for adapters whose ``get_reward`` has another signature)."""
        return self.get_reward(transitions)

    def extend(self, transitions: TensorDictBase) -> None:
        """Stores the level's semi-MDP transitions (rewards already from `get_reward`)."""

    def learn(self) -> dict[str, float]:
        """Runs the level's update schedule and returns its metrics."""
        return {}

    def accept(self, transitions: TensorDictBase) -> TensorDictBase | None:
        """What `observe` would store: checked, with the level's reward; ``None`` when nothing is to be stored.

        Raises `InvalidDataError` for transitions that do not fit the level (`checked_transitions`)
        or whose reward from `get_reward` is not finite. Changes nothing in the level.
        """
        if not self.training or transitions.batch_size.numel() == 0:
            return None
        transitions = checked_transitions(self, transitions)
        if transitions.batch_size.numel() == 0:
            return None
        reward = self._transition_reward(transitions)
        if not bool(torch.isfinite(reward).all()):
            raise InvalidDataError(f"{type(self).__name__}.get_reward returned non-finite rewards; nothing was stored")
        transitions.set(("next", "reward"), reward)
        return transitions

    def record(self, accepted: TensorDictBase | None) -> None:
        """Stores what `accept` returned (`extend`) and counts it."""
        if accepted is None:
            return
        self.extend(accepted)
        self.n_transitions += accepted.batch_size.numel()
        self.env_step_count += accepted.get(NEXT_DURATION).sum().to(self.env_step_count.device)

    def observe(self, transitions: TensorDictBase) -> None:
        """Checks transitions, then stores them with the level's reward; nothing is stored in eval mode.

        Everything is checked before a buffer or counter changes, so a refused batch leaves
        the level as it was.
        """
        self.record(self.accept(transitions))

    # ------------------------------------------------------------------ forward
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if not self.initialized:
            raise RuntimeError(
                f"{type(self).__name__} is not initialized: put it in a Hierarchy or call "
                "level.initialize(observation_spec, action_spec) first"
            )
        keys = self.tensor_keys
        index = self.state_index
        rows = None
        everyone_acts = False
        if index is not None and not self.always_acts:
            acting = tensordict.get(keys.acting)[..., index]
            rows = acting.reshape(-1).nonzero().squeeze(-1)
            if not rows.numel():  # nobody hands this level control: its held outputs stand
                return tensordict
            if rows.numel() == acting.numel():  # everyone acts: no gather and scatter
                rows, everyone_acts = None, True
        batch_shape = tensordict.batch_size
        obs = tensordict.get(keys.observation)
        if self.obs_map is not None:
            obs = self.obs_map(obs)
        flat_obs = obs.reshape(-1, *obs.shape[len(batch_shape):])
        n = flat_obs.shape[0]
        if index is None:  # a plain policy: act everywhere, hold nothing
            steps = torch.ones(n, 1, dtype=torch.long, device=obs.device)
        else:
            steps = tensordict.get(keys.steps)[..., index].reshape(n, 1) + 1
        inputs = {"observation": flat_obs, "steps": steps, INSTANCE: _instances(n, obs.device)}
        state_spec = self.get_state_spec()
        if state_spec is not None:
            held_state = tensordict.get(keys.state, None) if index is not None else None
            inputs["state"] = state_spec.zero((n,)) if held_state is None else held_state.reshape(n)
        if not self.is_top:
            level_input = tensordict.get(keys.level_input)
            inputs["level_input"] = level_input.reshape(n, *level_input.shape[len(batch_shape):])
        act_shape = self.action_spec.shape

        if rows is None:
            sub = unchecked_tensordict(inputs, torch.Size([n]))
            action = self._checked_action(sub, n, sub)
            done = None if self._never_done else self.is_done(sub).reshape(n)
            new_state = sub.get("state", None)
            if everyone_acts:
                start = tensordict.get(keys.start_observation)
                tensordict.set(keys.start_observation, obs.to(start.dtype).reshape(start.shape))
        else:
            sub = unchecked_tensordict({k: v[rows] for k, v in inputs.items()}, torch.Size([rows.numel()]))
            held = tensordict.get(keys.action).reshape(n, *act_shape)
            everyone = unchecked_tensordict(inputs, torch.Size([n]))
            action = held.index_copy(0, rows, self._checked_action(sub, rows.numel(), everyone).to(held.dtype))
            held_done = tensordict.get(keys.level_done)[..., index].reshape(n)
            done = held_done.index_copy(0, rows, self.is_done(sub).reshape(-1).to(torch.bool))
            new_state = None
            if state_spec is not None:
                new_state = inputs["state"].clone()
                new_state[rows] = sub.get("state")
            start = tensordict.get(keys.start_observation)
            mask = acting.reshape(batch_shape + (1,) * (obs.dim() - len(batch_shape)))
            tensordict.set(keys.start_observation, torch.where(mask, obs, start))
        tensordict.set(keys.action, action.reshape(batch_shape + act_shape))
        if new_state is not None and index is not None:
            tensordict.set(keys.state, new_state.reshape(batch_shape))
        if done is None:  # the held False stands
            if index is None:
                tensordict.set(keys.level_done, torch.zeros(batch_shape + (1,), dtype=torch.bool, device=obs.device))
        elif index is None:
            tensordict.set(keys.level_done, done.reshape(batch_shape + (1,)))
        else:
            level_done = tensordict.get(keys.level_done).clone()
            level_done[..., index] = done.reshape(batch_shape)
            tensordict.set(keys.level_done, level_done)
        return tensordict

    def _act(self, acting: TensorDictBase, everyone: TensorDictBase) -> torch.Tensor:
        """The actions of the acting rows (``acting["instance"]`` indexes ``everyone``, all rows); `get_action` here.

        A hook for adapters whose ``get_action`` sees every instance (`torchrl_layered.compat`).
        """
        return self.get_action(acting)

    def _checked_action(self, sub: TensorDictBase, n: int, everyone: TensorDictBase) -> torch.Tensor:
        action = self._act(sub, everyone)
        expected = torch.Size([n, *self.action_spec.shape])
        if not isinstance(action, torch.Tensor) or action.shape != expected:
            got = tuple(action.shape) if isinstance(action, torch.Tensor) else type(action).__name__
            raise ValueError(
                f"{type(self).__name__}.get_action returned {got} for {n} acting rows; expected {tuple(expected)} "
                f"(rows x action_spec.shape)"
            )
        return action if action.dtype == self.action_spec.dtype else action.to(self.action_spec.dtype)

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict[str, Any]:
        """What the state dict keeps beside tensors: the update schedule and the optimisers' states."""
        state: dict[str, Any] = {"num_gradient_updates": self.num_gradient_updates}
        if self.schedule is not None:
            state["learned_transitions"] = self.schedule.learned
        optimizers = self.named_optimizers()
        if optimizers:
            state["optimizers"] = {name: optimizer.state_dict() for name, optimizer in optimizers.items()}
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        # "num_model_updates" and top-level optimiser entries: checkpoints written before they were grouped
        self.num_gradient_updates = int(state.get("num_gradient_updates", state.get("num_model_updates", 0)))
        if self.schedule is not None:
            self.schedule.learned = int(state.get("learned_transitions", 0))
        saved = state.get("optimizers", {})
        for name, optimizer in self.named_optimizers().items():
            entry = saved.get(name, state.get(name))
            if entry is not None:
                optimizer.load_state_dict(entry)

    def __getstate__(self) -> dict[str, Any]:
        """A pickled level, such as a collector worker's copy, acts but holds no replay buffer.

        Its data stays with the level that learns (a worker's copy would be a stale duplicate,
        and TorchRL refuses to send an empty lazy storage to a spawned process); checkpoints
        keep buffers on their own (`torchrl_layered.trainers.checkpoint.hierarchy_buffers`).
        """
        state = super().__getstate__()
        state["replay_buffer"] = None
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(action_spec={type(self.action_spec).__name__ if self.action_spec is not None else None}, control_interval={self.control_interval})"
