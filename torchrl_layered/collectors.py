"""`make_collector`: a TorchRL collector of a `Hierarchy` whose env carries the hierarchy's transform.

TorchRL 0.13 and later collectors add the transform themselves when asked
(``auto_register_policy_transforms=True``); older ones (TorchRL 0.12's ``Collector`` and
``SyncDataCollector``) do not know that argument, and the env has to be wrapped by hand:
``TransformedEnv(env, hierarchy.make_transform())``. `make_collector` does whichever the
collector supports, so the same line works on every TorchRL the package supports.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import torchrl.collectors as _collectors
from torchrl.envs import Compose, EnvBase, Transform, TransformedEnv

from torchrl_layered.hierarchy.hierarchy import Hierarchy
from torchrl_layered.hierarchy.transform import HierarchyTransform

AUTO_REGISTER = "auto_register_policy_transforms"


def default_collector_cls() -> type:
    """TorchRL's single-process collector: ``Collector``, or ``SyncDataCollector`` where that is all there is."""
    cls = getattr(_collectors, "Collector", None) or getattr(_collectors, "SyncDataCollector", None)
    if cls is None:  # pragma: no cover - every supported TorchRL has one of them
        raise ImportError("torchrl.collectors has neither Collector nor SyncDataCollector")
    return cls


def registers_policy_transforms(collector_cls: type) -> bool:
    """Whether ``collector_cls`` takes ``auto_register_policy_transforms`` (TorchRL 0.13 and later)."""
    for cls in inspect.getmro(collector_cls):
        init = vars(cls).get("__init__")
        if init is not None and AUTO_REGISTER in inspect.signature(init).parameters:
            return True
    return False


def _transforms(transform: Transform):
    if isinstance(transform, Compose):
        for inner in transform:
            yield from _transforms(inner)
    else:
        yield transform


def carries_hierarchy_transform(env: Any) -> bool:
    """Whether ``env`` (an env; constructors are not looked into) already has a `HierarchyTransform`."""
    while isinstance(env, TransformedEnv):
        if any(isinstance(t, HierarchyTransform) for t in _transforms(env.transform)):
            return True
        env = env.base_env
    return False


def with_transform(env: EnvBase, transform: Transform) -> TransformedEnv:
    """``env`` with ``transform`` appended (a transformed env gets it at the end of its transforms)."""
    if isinstance(env, TransformedEnv):
        return env.append_transform(transform)
    return TransformedEnv(env, Compose(transform))


def _build_with_transform(make_env: Callable[[], EnvBase], transform: Transform) -> EnvBase:
    env = make_env()
    if carries_hierarchy_transform(env):
        return env
    return with_transform(env, transform.clone())  # each process builds its own


def make_collector(env: Any, hierarchy: Hierarchy, collector_cls: type | None = None, **kwargs) -> Any:
    """A TorchRL collector of ``hierarchy`` on ``env``, with the hierarchy's transform on the env.

    Where the collector registers policy transforms itself (TorchRL 0.13 and later) it is asked
    to (``auto_register_policy_transforms=True``); otherwise the env is wrapped with
    ``hierarchy.make_transform()``. An env that already carries the transform is left as it is.

    Args:
        env: an env, an env constructor, or for multi-process collectors (``MultiSyncCollector``,
            ...) a list of env constructors; each constructed env gets its own transform.
        hierarchy: the policy.
        collector_cls: the TorchRL collector class; ``Collector`` by default (``SyncDataCollector``
            where there is no ``Collector``).
        **kwargs: passed to the collector (``frames_per_batch``, ``total_frames``, ``device``, ...).

    Example:
        >>> collector = make_collector(env, hierarchy, frames_per_batch=400, total_frames=4000)
        >>> for batch in collector:
        ...     hierarchy.extend(batch)
        ...     hierarchy.learn()
    """
    if not isinstance(hierarchy, Hierarchy):
        raise TypeError(f"make_collector needs a torchrl_layered Hierarchy as the policy; got {type(hierarchy).__name__}")
    if AUTO_REGISTER in kwargs:
        raise TypeError(f"make_collector adds the hierarchy's transform itself; do not pass {AUTO_REGISTER}")
    if not (isinstance(env, (EnvBase, list, tuple)) or callable(env)):
        raise TypeError(f"make_collector needs an env, an env constructor or a list of them; got {type(env).__name__}")
    collector_cls = default_collector_cls() if collector_cls is None else collector_cls
    if registers_policy_transforms(collector_cls):
        kwargs[AUTO_REGISTER] = not carries_hierarchy_transform(env)
        return collector_cls(env, hierarchy, **kwargs)
    transform = hierarchy.make_transform()
    if isinstance(env, (list, tuple)):
        env = [functools.partial(_build_with_transform, make, transform) for make in env]
    elif isinstance(env, EnvBase):
        if not carries_hierarchy_transform(env):
            env = with_transform(env, transform)
    else:
        env = functools.partial(_build_with_transform, env, transform)
    return collector_cls(env, hierarchy, **kwargs)
