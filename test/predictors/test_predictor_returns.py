"""`Predictor.returns`: chunked rollouts and shared deterministic particles give the returns of one piece."""
import pytest
import torch

from torchrl_layered.predictors import IdentityEncoder, RewardPredictor


def make(chunk, **kwargs):
    torch.manual_seed(0)
    predictor = RewardPredictor(IdentityEncoder(3), 2, num_members=3, hidden_sizes=(16, 16), head_sizes=(8,),
                                rollout_chunk=chunk, **kwargs)
    with torch.no_grad():  # a non-trivial termination head, so survival discounting matters
        predictor.model.head.bias[..., -1] = -1.0
    return predictor


@pytest.mark.parametrize("chunk", [1, 7, 64, None])
def test_chunked_rollouts_equal_one_piece(chunk):
    whole, chunked = make(None), make(chunk)
    state, actions = torch.randn(4, 3), torch.rand(4, 10, 5, 2) * 2 - 1
    s, c = whole.encode(state)
    with torch.no_grad():
        expected = whole.returns(s, c, actions, particles=2, gamma=0.9, deterministic=True)
        got = chunked.returns(s, c, actions, particles=2, gamma=0.9, deterministic=True)
    assert got.shape == (4, 10, 3 * 2)
    torch.testing.assert_close(got, expected)


def test_chunked_sampled_rollouts_are_reproducible_and_spread_over_particles(monkeypatch):
    # given a generator, sampled rollouts run eagerly even where compiling is asked for
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: pytest.fail("a generator's rollout must not compile"))
    predictor = make(5, compile_rollout=True)
    s, c = predictor.encode(torch.randn(2, 3))
    actions = torch.rand(2, 6, 4, 2) * 2 - 1
    with torch.no_grad():
        first = predictor.returns(s, c, actions, particles=3, generator=torch.Generator().manual_seed(1))
        again = predictor.returns(s, c, actions, particles=3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, again)
    per_member = first.reshape(2, 6, 3, 3)
    assert (per_member.std(-1) > 0).all(), "sampled particles of one member must differ"


def test_deterministic_particles_are_computed_once_and_copied():
    predictor = make(None)
    s, c = predictor.encode(torch.randn(2, 3))
    actions = torch.rand(2, 6, 4, 2) * 2 - 1
    with torch.no_grad():
        one = predictor.returns(s, c, actions, particles=1, deterministic=True)
        four = predictor.returns(s, c, actions, particles=4, deterministic=True)
    assert four.shape == (2, 6, 3 * 4)
    torch.testing.assert_close(four.reshape(2, 6, 3, 4), one[..., None].expand(2, 6, 3, 4))


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True, "64"])
def test_a_bad_rollout_chunk_is_refused(chunk):
    with pytest.raises(ValueError, match="rollout_chunk"):
        make(chunk)


@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "sampled"])
def test_bfloat16_rollouts_return_float32_near_the_float32_returns(deterministic):
    full, half = make(7), make(7, planning_dtype="bfloat16")
    with torch.no_grad():  # heads of some size, so that the returns are not near zero
        for p in full.parameters():
            p.add_(0.2 * torch.randn_like(p))
    half.load_state_dict(full.state_dict())
    s, c = full.encode(torch.randn(4, 3))
    actions = torch.rand(4, 10, 5, 2) * 2 - 1
    returns = {}
    for name, predictor in (("float32", full), ("bfloat16", half)):
        with torch.no_grad():
            returns[name] = predictor.returns(s, c, actions, particles=2, gamma=0.9, deterministic=deterministic,
                                              generator=torch.Generator().manual_seed(3))
    assert returns["bfloat16"].dtype == torch.float32 and returns["bfloat16"].shape == (4, 10, 6)
    assert next(half.parameters()).dtype == torch.float32
    assert not torch.equal(returns["bfloat16"], returns["float32"])
    scale = float(returns["float32"].abs().max())
    torch.testing.assert_close(returns["bfloat16"], returns["float32"], rtol=0.0, atol=0.1 * scale)


@pytest.mark.parametrize("dtype", ["half", "fp16", None, torch.bfloat16])
def test_an_unknown_planning_dtype_is_refused(dtype):
    with pytest.raises(ValueError, match="planning_dtype must be one of"):
        make(7, planning_dtype=dtype)
