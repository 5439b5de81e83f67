"""``hierarchy.kwargs`` checked before anything is built: types from the factory's signature, ranges by name.

A hierarchy factory (`torchrl_layered.trainers.HIERARCHIES`) declares its options with type
annotations and defaults; a value of the wrong type is refused naming the option. Options
named like a size, a count, a rate or a discount are also range-checked by `RANGES`, the one
place those rules are declared (they apply inside nested mappings such as ``config`` too).
"""
from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Mapping

from torchrl_layered.hierarchies import HIERARCHIES
from torchrl_layered.trainers.config import ConfigError


@dataclass(frozen=True)
class Range:
    """The numbers an option accepts: ``low < x`` (``<=`` if ``low_closed``), ``x <= high`` (``<`` if not ``high_closed``)."""

    low: float | None = None
    high: float | None = None
    low_closed: bool = False
    high_closed: bool = True
    integer: bool = False

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.integer and not isinstance(value, int)):
            return False
        if self.low is not None and (value < self.low or value == self.low and not self.low_closed):
            return False
        return self.high is None or value < self.high or value == self.high and self.high_closed

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.high is None:
            return f"{kind} {'>=' if self.low_closed else '>'} {self.low:g}"
        return f"{kind} in {'[' if self.low_closed else '('}{self.low:g}, {self.high:g}{']' if self.high_closed else ')'}"


#: Option-name patterns (fnmatch) and the range their numbers must lie in; the first match applies.
#: A list value (``hidden_sizes: [64, 64]``) is checked element by element.
RANGES: tuple[tuple[tuple[str, ...], Range], ...] = (
    (("*_steps",), Range(low=0, low_closed=True, integer=True)),
    (("*_size", "*_sizes", "num_*", "n_*", "horizon", "*_interval", "*_dim", "iterations"), Range(low=0, integer=True)),
    (("gamma", "discount*", "tau", "elite_ratio"), Range(low=0, high=1)),
    (("lr", "*_lr", "*_std"), Range(low=0)),
    (("*_prob", "dropout"), Range(low=0, high=1, low_closed=True)),
    (("momentum",), Range(low=0, high=1, low_closed=True, high_closed=False)),
)


def range_of(name: str) -> Range | None:
    """The range `RANGES` declares for an option called ``name``, or None."""
    return next((bound for patterns, bound in RANGES if any(fnmatchcase(name, p) for p in patterns)), None)


def check_option_values(hierarchy: str, factory: Any, kwargs: Mapping[str, Any]) -> None:
    """Raises a `ConfigError` naming ``hierarchy.kwargs.<key>`` if a value has the wrong type or lies out of range.

    Options the factory does not name (a ``**kwargs`` factory) are only range-checked.
    """
    params = _parameters(factory)
    for name, value in kwargs.items():
        key = f"hierarchy.kwargs.{name}"
        param = params.get(name)
        if param is not None:
            expected = param.annotation
            if expected is inspect.Parameter.empty and param.default not in (inspect.Parameter.empty, None):
                expected = type(param.default)
            if expected is not inspect.Parameter.empty and not _matches(value, expected):
                raise ConfigError(
                    f"{key} must be {_describe(expected)} (hierarchy {hierarchy!r}); got {value!r}"
                )
        _check_range(key, name, value)


def _check_range(key: str, name: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for sub, item in value.items():
            _check_range(f"{key}.{sub}", str(sub), item)
        return
    bound = range_of(name)
    if bound is None or value is None or isinstance(value, str):
        return
    items = value if isinstance(value, (list, tuple)) else [value]
    if not all(bound.accepts(item) for item in items):
        what = f"{key} entries" if isinstance(value, (list, tuple)) else key
        raise ConfigError(f"{what} must be {bound}; got {value!r}")


def _parameters(factory: Any) -> dict[str, inspect.Parameter]:
    """The factory's keyword options (the env aside), with annotations evaluated where possible."""
    try:
        signature = inspect.signature(factory, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        signature = inspect.signature(factory)
    params = list(signature.parameters.values())[1:]
    return {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _matches(value: Any, expected: Any) -> bool:
    """Whether a config value (bool, int, float, str, None, list or dict) fits an annotation; unknown kinds fit."""
    if isinstance(expected, str) or expected is Any:
        return True  # an annotation that could not be evaluated
    if expected is None or expected is type(None):
        return value is None
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    cls = origin or expected
    if not isinstance(cls, type):
        return True
    if issubclass(cls, collections.abc.Mapping):
        return isinstance(value, Mapping)
    if issubclass(cls, collections.abc.Sequence) and not issubclass(cls, str):
        if not isinstance(value, (list, tuple)):
            return False
        homogeneous = len(args) == 1 or len(args) == 2 and args[1] is Ellipsis  # Sequence[int], tuple[int, ...]
        return not homogeneous or all(_matches(v, args[0]) for v in value)
    return isinstance(value, cls)


_PLAIN = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _describe(expected: Any) -> str:
    plain = _PLAIN.get(expected) if isinstance(expected, type) else None
    return plain or f"of type {inspect.formatannotation(expected)}"


def check_hierarchy_kwargs(name: str, kwargs: dict) -> None:
    """Raises a `ConfigError` naming ``hierarchy.kwargs.<key>`` if the factory has no such option."""
    params = inspect.signature(HIERARCHIES[name]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    options = list(params)[1:]  # the first parameter is the env
    for key in kwargs:
        if key not in options:
            raise ConfigError(
                f"hierarchy.kwargs.{key} is not an option of hierarchy {name!r}; its options are {options}"
            )
