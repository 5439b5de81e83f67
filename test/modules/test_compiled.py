"""`CompiledOnUse`: a failing compile warns once and runs eagerly; the caller's own errors still raise; it pickles."""
import math
import pickle
import warnings

import pytest
import torch

from helpers import failing_compile
from torchrl_layered.modules.compiled import CompiledOnUse, compiled_attribute


def strict_sqrt(x: float) -> float:
    if x < 0:
        raise ValueError("a negative input")
    return math.sqrt(x)


def test_a_failing_compile_warns_once_then_the_eager_function_answers(monkeypatch):
    monkeypatch.setattr(torch, "compile", failing_compile)
    wrapped = CompiledOnUse(strict_sqrt, "owner")
    with pytest.warns(RuntimeWarning, match="owner: torch.compile failed \\(RuntimeError: no C\\+\\+ compiler found\\)"):
        assert wrapped(4.0) == 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert wrapped(9.0) == 3.0 and wrapped.failed


def test_an_error_of_the_callers_making_is_raised_by_the_eager_function(monkeypatch):
    monkeypatch.setattr(torch, "compile", failing_compile)
    wrapped = CompiledOnUse(strict_sqrt, "owner")
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="a negative input"):
        wrapped(-1.0)


def test_it_pickles_without_the_compiled_code_and_is_kept_once_per_owner():
    wrapped = CompiledOnUse(strict_sqrt, "owner", dynamic=None)
    wrapped._compiled = lambda x: x  # compiled code does not pickle; it must be left out
    clone = pickle.loads(pickle.dumps(wrapped))
    assert clone._compiled is None and clone.fn is strict_sqrt and clone.compile_kwargs == {"dynamic": None}

    class Owner:
        pass

    owner = Owner()
    first = compiled_attribute(owner, "_fn", strict_sqrt, "owner")
    assert compiled_attribute(owner, "_fn", abs, "other") is first and owner._fn is first
