"""Sampling planners: maximise an objective over action sequences, batched over instances.

Each planner is a parameter-free module called as ``planner(objective, state, batch_size)``;
it returns a `PlanResult` whose ``state`` warm-starts the next call.
"""
from torchrl_layered.planners.base import Objective, PlanResult, SamplingPlanner
from torchrl_layered.planners.cem import CEMPlanner
from torchrl_layered.planners.icem import ICEMPlanner
from torchrl_layered.planners.mppi import MPPIPlanner
from torchrl_layered.planners.noise import colored_noise

__all__ = ["SamplingPlanner", "PlanResult", "Objective", "CEMPlanner", "ICEMPlanner", "MPPIPlanner", "colored_noise"]
