"""`Predictor(compile_rollout=True)`: the compiled rollout scores as the eager one, pickles, and falls back."""
import copy
import pickle
import warnings

import pytest
import torch

from helpers import failing_compile
from torchrl_layered.predictors import IdentityEncoder, RewardPredictor


def make(**kwargs):
    torch.manual_seed(0)
    predictor = RewardPredictor(IdentityEncoder(3), 2, num_members=2, hidden_sizes=(8,), head_sizes=(8,),
                                rollout_chunk=16, **kwargs)
    with torch.no_grad():  # a non-trivial termination head, so survival discounting matters
        predictor.model.head.bias[..., -1] = -1.0
    return predictor


@pytest.mark.compile
def test_compiled_rollouts_score_as_eager_ones_and_the_predictor_still_pickles():
    eager, compiled = make(), make(compile_rollout=True)
    s, c = eager.encode(torch.randn(3, 3))
    actions = torch.rand(3, 8, 4, 2) * 2 - 1  # 48 rollouts: three chunks of 16
    with torch.no_grad():
        expected = eager.returns(s, c, actions, particles=2, gamma=0.9, deterministic=True)
        got = compiled.returns(s, c, actions, particles=2, gamma=0.9, deterministic=True)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        sampled = compiled.returns(s, c, actions, particles=2, gamma=0.9)
        seeded = [compiled.returns(s, c, actions, particles=2, gamma=0.9, generator=torch.Generator().manual_seed(4))
                  for _ in range(2)]
    assert not compiled._compiled_rollout.failed, "the rollout compiled here; it must not have fallen back"
    torch.testing.assert_close(seeded[0], seeded[1])  # the noise is drawn from the generator, outside the graph
    assert sampled.shape == (3, 8, 2 * 2) and torch.isfinite(sampled).all()
    assert (sampled.reshape(3, 8, 2, 2).std(-1) > 0).all(), "sampled particles of one member must differ"
    for clone in (pickle.loads(pickle.dumps(compiled)), copy.deepcopy(compiled)):
        assert clone.compile_rollout and clone._compiled_rollout._compiled is None  # rebuilt at the next call
        with torch.no_grad():
            torch.testing.assert_close(clone.returns(s, c, actions, gamma=0.9, deterministic=True),
                                       expected[..., ::2], rtol=1e-5, atol=1e-5)


def test_a_rollout_that_cannot_compile_warns_once_and_runs_eagerly(monkeypatch):
    monkeypatch.setattr(torch, "compile", failing_compile)
    eager, compiled = make(), make(compile_rollout=True)
    s, c = eager.encode(torch.randn(2, 3))
    actions = torch.rand(2, 5, 3, 2) * 2 - 1
    with torch.no_grad():
        expected = eager.returns(s, c, actions, deterministic=True)
        with pytest.warns(RuntimeWarning, match="rollout: torch.compile failed .*no C\\+\\+ compiler found.*eagerly"):
            got = compiled.returns(s, c, actions, deterministic=True)
        torch.testing.assert_close(got, expected)
        assert compiled._compiled_rollout.failed
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no second warning
            torch.testing.assert_close(compiled.returns(s, c, actions, deterministic=True), expected)


@pytest.mark.parametrize("flag", [1, "yes", None])
def test_a_compile_rollout_that_is_not_a_bool_is_refused(flag):
    with pytest.raises(TypeError, match="compile_rollout must be a bool"):
        make(compile_rollout=flag)

