"""`CompiledOnUse`: a function compiled with ``torch.compile`` at its first call, eager where that fails.

Small models spend most of a plan call or an update in per-op overhead and separate
elementwise passes, which compiling removes; compiling costs seconds at the first call and
needs a working compiler toolchain, so it is opt-in (`Predictor`'s ``compile_rollout``,
`PlannerLevel`'s ``compile``) and falls back to the eager function with one warning.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch


class CompiledOnUse:
    """Calls ``torch.compile(fn)``, compiled at the first call; after a failure, ``fn`` itself.

    Any exception from the compiled call (no C++ compiler, an op the compiler cannot trace)
    warns once, naming ``owner``, and the call is repeated eagerly, so an error of the
    caller's own making is still raised, by the eager function. Pickles (collector workers,
    deep copies) without the compiled code, which is rebuilt at the next call.
    """

    def __init__(self, fn: Callable[..., Any], owner: str, **compile_kwargs):
        self.fn, self.owner, self.compile_kwargs = fn, owner, compile_kwargs
        self.failed = False
        self._compiled = None

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.fn(*args, **kwargs)
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, **self.compile_kwargs)
        try:
            return self._compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any compiler failure; the eager call below decides
            first_line = str(err).splitlines()[0] if str(err) else ""
            warnings.warn(f"{self.owner}: torch.compile failed ({type(err).__name__}: {first_line}); running "
                          "eagerly from now on", RuntimeWarning, stacklevel=3)
            self.failed = True
            return self.fn(*args, **kwargs)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_compiled": None}


def compiled_attribute(owner: object, name: str, fn: Callable[..., Any], label: str, **compile_kwargs) -> CompiledOnUse:
    """The `CompiledOnUse` of ``fn`` kept on ``owner`` as ``name``, made at the first request."""
    compiled = owner.__dict__.get(name)
    if compiled is None:
        compiled = owner.__dict__[name] = CompiledOnUse(fn, label, **compile_kwargs)
    return compiled
