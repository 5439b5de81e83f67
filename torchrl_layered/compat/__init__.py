"""A port path from LayeredRL: levels written against its interface run in a torchrl_layered `Hierarchy`."""
from torchrl_layered.compat.level import LayeredRLLevel
from torchrl_layered.compat.spaces import space_to_spec, spec_to_space

__all__ = ["LayeredRLLevel", "space_to_spec", "spec_to_space"]
