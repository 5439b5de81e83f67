"""The registry of ready-made hierarchies: ``name -> factory(env, **kwargs) -> Hierarchy``.

The training app builds ``hierarchy=NAME`` from it. A new level plugs into the app with one
function decorated with `register_hierarchy`: its keyword defaults are the app's
``hierarchy.kwargs`` (`torchrl_layered.trainers.config.register_configs`).
"""
from __future__ import annotations

from typing import Callable

from torchrl.envs import EnvBase

from torchrl_layered.hierarchy import Hierarchy

HierarchyFactory = Callable[..., Hierarchy]

#: name -> factory(env, **kwargs); filled by `register_hierarchy`.
HIERARCHIES: dict[str, HierarchyFactory] = {}


def register_hierarchy(name: str) -> Callable[[HierarchyFactory], HierarchyFactory]:
    """Registers ``factory(env, **kwargs) -> Hierarchy`` as ``hierarchy=name`` of the app."""

    def register(factory: HierarchyFactory) -> HierarchyFactory:
        if name in HIERARCHIES:
            raise ValueError(f"a hierarchy named {name!r} is already registered ({HIERARCHIES[name].__qualname__})")
        HIERARCHIES[name] = factory
        return factory

    return register


def make_hierarchy(name: str, env: EnvBase, **kwargs) -> Hierarchy:
    """Builds the hierarchy registered as ``name`` for ``env``."""
    if name not in HIERARCHIES:
        raise ValueError(f"unknown hierarchy {name!r}; choose one of {sorted(HIERARCHIES)}")
    return HIERARCHIES[name](env, **kwargs)
