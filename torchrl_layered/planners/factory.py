"""What a level may pass as its planner: a name, a planner class, or a ``functools.partial`` of one.

A partial's keywords are planner arguments. LayeredRL's spelling,
``partial(CEMPlanner, cem_params={...}, use_icem=True, initial_sigma=...)``, is read as it
means there: its CEMPlanner is iCEM unless ``use_icem=False``, and ``cem_params`` holds the
budget under its own names (`CEM_PARAMS`).
"""
from __future__ import annotations

from functools import partial
from typing import Any

from torchrl_layered.planners.base import SamplingPlanner
from torchrl_layered.planners.cem import CEMPlanner
from torchrl_layered.planners.icem import ICEMPlanner
from torchrl_layered.planners.mppi import MPPIPlanner

PLANNERS: dict[str, type[SamplingPlanner]] = {"cem": CEMPlanner, "icem": ICEMPlanner, "mppi": MPPIPlanner}

#: LayeredRL's ``cem_params`` keys and what each becomes here.
CEM_PARAMS = {
    "n_samples": "num_samples",
    "n_iterations": "num_iterations",
    "elite_ratio": "num_elites (round(num_samples * elite_ratio), at least 2)",
    "momentum": "momentum",
    "return_mode": "result_mode ('mean' or 'best')",
    "clip": "ignored: samples always stay within the action bounds (LayeredRL's truncated sampling did too)",
}


def resolve_planner(planner: str | type[SamplingPlanner] | partial) -> tuple[type[SamplingPlanner], dict[str, Any]]:
    """The planner class and the arguments the choice fixes (the level adds its own budget under them)."""
    if isinstance(planner, str):
        if planner not in PLANNERS:
            raise ValueError(f"unknown planner {planner!r}; choose one of {sorted(PLANNERS)}, a planner class or a partial")
        return PLANNERS[planner], {}
    if isinstance(planner, partial):
        if planner.args:
            raise TypeError("a planner partial takes keyword arguments only (the level passes the action spec)")
        cls, kwargs = planner.func, dict(planner.keywords)
        if "cem_params" in kwargs or "use_icem" in kwargs or "initial_sigma" in kwargs:
            cls, kwargs = _from_layeredrl(cls, kwargs)
        return _checked_class(cls), kwargs
    return _checked_class(planner), {}


def _checked_class(cls) -> type[SamplingPlanner]:
    if not (isinstance(cls, type) and issubclass(cls, SamplingPlanner)):
        raise TypeError(f"a planner must be one of {sorted(PLANNERS)}, a SamplingPlanner class or a partial of one; got {cls!r}")
    return cls


def _from_layeredrl(cls, kwargs: dict[str, Any]) -> tuple[type[SamplingPlanner], dict[str, Any]]:
    params = dict(kwargs.pop("cem_params", None) or {})
    unknown = sorted(set(params) - set(CEM_PARAMS))
    if unknown:
        raise ValueError(f"cem_params has unknown keys {unknown}; known: {sorted(CEM_PARAMS)}")
    if kwargs.pop("use_icem", True) and cls is CEMPlanner:  # LayeredRL's CEMPlanner runs iCEM by default
        cls = ICEMPlanner
    out: dict[str, Any] = {}
    if "n_samples" in params:
        out["num_samples"] = int(params["n_samples"])
    if "n_iterations" in params:
        out["num_iterations"] = int(params["n_iterations"])
    if "elite_ratio" in params:
        ratio = float(params["elite_ratio"])
        if not 0 < ratio <= 1:
            raise ValueError(f"cem_params elite_ratio must lie in (0, 1]; got {ratio}")
        out["elite_ratio"] = ratio  # the level turns it into num_elites once num_samples is known
    if "momentum" in params:
        out["momentum"] = float(params["momentum"])
    if "return_mode" in params:
        if params["return_mode"] not in ("mean", "best"):
            raise ValueError(f"cem_params return_mode {params['return_mode']!r} is not supported; use 'mean' or 'best'")
        out["result_mode"] = params["return_mode"]
    if "initial_sigma" in kwargs:
        out["initial_sigma"] = kwargs.pop("initial_sigma")  # absolute; the level divides by the half range
    out.update(kwargs)
    return cls, out
