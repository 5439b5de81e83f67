"""Ready-made hierarchies, by name: what ``hierarchy=NAME`` builds in the training app."""
from __future__ import annotations

from typing import Callable

from torchrl.data import Bounded
from torchrl.envs import EnvBase

from torchrl_layered.hierarchy import Hierarchy
from torchrl_layered.levels import RandomLevel


def random_hierarchy(env: EnvBase, *, option_dim: int = 2, control_interval: int = 10) -> Hierarchy:
    """A random option chosen every ``control_interval`` steps over a random low level: a baseline."""
    option = Bounded(-1.0, 1.0, shape=(option_dim,), device=env.device)
    return Hierarchy([RandomLevel(), RandomLevel(input_spec=option, control_interval=control_interval)], env=env)


HIERARCHIES: dict[str, Callable[..., Hierarchy]] = {
    "random": random_hierarchy,
}


def make_hierarchy(name: str, env: EnvBase, **kwargs) -> Hierarchy:
    """Builds the hierarchy registered as ``name`` for ``env``."""
    if name not in HIERARCHIES:
        raise ValueError(f"unknown hierarchy {name!r}; choose one of {sorted(HIERARCHIES)}")
    return HIERARCHIES[name](env, **kwargs)
