"""`Predictor.returns`: chunked rollouts and shared deterministic particles give the returns of one piece."""
import pytest
import torch

from torchrl_layered.predictors import IdentityEncoder, KnownModel, Predictor, RewardPredictor


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


def test_chunked_sampled_rollouts_are_reproducible_and_spread_over_particles():
    predictor = make(5)
    s, c = predictor.encode(torch.randn(2, 3))
    actions = torch.rand(2, 6, 4, 2) * 2 - 1
    with torch.no_grad():
        first = predictor.returns(s, c, actions, particles=3, generator=torch.Generator().manual_seed(1))
        again = predictor.returns(s, c, actions, particles=3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, again)
    per_member = first.reshape(2, 6, 3, 3)
    assert (per_member.std(-1) > 0).all(), "sampled particles of one member must differ"


def test_a_compiled_rollout_gets_its_sampling_noise_drawn_outside_from_the_generator(monkeypatch):
    noises = []

    def recording_compile(fn, **kwargs):  # stands in for torch.compile: records what the graph receives
        def run(*args, **kw):
            noises.append(args[4])
            return fn(*args, **kw)
        return run

    monkeypatch.setattr(torch, "compile", recording_compile)
    predictor = make(7, compile_rollout=True)
    s, c = predictor.encode(torch.randn(2, 3))
    actions = torch.rand(2, 5, 4, 2) * 2 - 1  # 10 candidates x 3 particles per member: chunks of whole candidates
    with torch.no_grad():
        first = predictor.returns(s, c, actions, particles=3, generator=torch.Generator().manual_seed(1))
        assert len(noises) == 5 and all(n is not None and n.shape == (4, 3, 6, 3) for n in noises), \
            [tuple(n.shape) for n in noises]
        again = predictor.returns(s, c, actions, particles=3, generator=torch.Generator().manual_seed(1))
        other = predictor.returns(s, c, actions, particles=3, generator=torch.Generator().manual_seed(2))
        noises.clear()
        predictor.returns(s, c, actions, particles=3, deterministic=True)
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    assert (first.reshape(2, 5, 3, 3).std(-1) > 0).all(), "sampled particles of one member must differ"
    assert noises and all(n is None for n in noises), "deterministic rollouts draw nothing"


def test_a_model_without_drawn_noise_rolls_out_eagerly_given_a_generator(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: pytest.fail("a generator's rollout must not compile"))
    model = KnownModel(lambda state, action, context: state + 0.1 * action.sum(-1, keepdim=True))
    predictor = Predictor(IdentityEncoder(3), model, lambda state, context, action: -state.pow(2).sum(-1),
                          compile_rollout=True)
    assert not predictor.model_takes_noise
    s, c = predictor.encode(torch.randn(2, 3))
    with torch.no_grad():
        got = predictor.returns(s, c, torch.rand(2, 4, 3, 2), generator=torch.Generator().manual_seed(0))
    assert got.shape == (2, 4, 1) and bool(got.isfinite().all())


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


class _NoParticlesModel(torch.nn.Module):
    """An ensemble whose ``step`` does not take ``particles``: every particle is stepped on its own."""

    def __init__(self, ensemble):
        super().__init__()
        self.ensemble = ensemble
        self.num_elites = ensemble.num_elites

    def step(self, state, action, context=None, *, deterministic=False, generator=None, noise=None):
        return self.ensemble.step(state, action, context, deterministic=deterministic, generator=generator, noise=noise)


@pytest.mark.parametrize("chunk", [6, None])
@pytest.mark.parametrize("particles", [2, 3])
def test_particles_sharing_their_first_step_give_the_returns_of_particles_stepped_one_by_one(chunk, particles):
    """The first imagined step (and reward) computed once per candidate: the same sampled returns, with
    the same draws, as rolling out every particle as a candidate of its own, and as a model that
    steps every particle itself."""
    predictor = make(chunk)
    one_by_one = make(chunk)  # chunks of 6 rollouts: whole candidates for 2 and 3 particles
    one_by_one.load_state_dict(predictor.state_dict())
    own_steps = Predictor(predictor.encoder, _NoParticlesModel(predictor.model), predictor.reward, predictor.value,
                          rollout_chunk=chunk)
    assert predictor.model_takes_particles and not own_steps.model_takes_particles
    s, c = predictor.encode(torch.randn(3, 3))
    actions = torch.rand(3, 4, 5, 2) * 2 - 1
    repeated = actions.repeat_interleave(particles, 1)  # every particle a candidate: the same row order
    with torch.no_grad():
        got = predictor.returns(s, c, actions, particles=particles, gamma=0.9, generator=torch.Generator().manual_seed(5))
        alone = one_by_one.returns(s, c, repeated, particles=1, gamma=0.9, generator=torch.Generator().manual_seed(5))
        stepped = own_steps.returns(s, c, actions, particles=particles, gamma=0.9,
                                    generator=torch.Generator().manual_seed(5))
    expected = alone.reshape(3, 4, particles, 3).transpose(2, 3).reshape(3, 4, 3 * particles)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(stepped, expected)
    assert (got.reshape(3, 4, 3, particles).std(-1) > 0).all(), "particles of one member must still differ"


def test_a_known_model_spreads_its_step_over_particles():
    model = KnownModel(lambda state, action, context: state + action.sum(-1, keepdim=True))
    state, action = torch.randn(1, 4, 3), torch.randn(1, 4, 2)
    next_state, term = model.step(state, action, particles=3)
    assert next_state.shape == (1, 12, 3) and term.shape == (1, 12)
    torch.testing.assert_close(next_state.reshape(1, 4, 3, 3), (state + action.sum(-1, keepdim=True))[:, :, None].expand(1, 4, 3, 3))


@pytest.mark.parametrize("activation", [torch.nn.ReLU, "ReLU"])
def test_the_activation_reaches_the_ensemble_and_both_heads(activation):
    predictor = RewardPredictor(IdentityEncoder(3), 2, num_members=2, hidden_sizes=(8,), head_sizes=(8,),
                                activation=activation)
    assert type(predictor.model.activation) is torch.nn.ReLU
    for head in (predictor.reward, predictor.value):
        kinds = {type(m) for m in head.net.modules()}
        assert torch.nn.ReLU in kinds and torch.nn.SiLU not in kinds
    s, c = predictor.encode(torch.randn(2, 3))
    with torch.no_grad():
        got = predictor.returns(s, c, torch.rand(2, 4, 3, 2), particles=2, gamma=0.9)
    assert got.shape == (2, 4, 4) and bool(got.isfinite().all())


@pytest.mark.parametrize("activation", ["relu", "Linear", 3, torch.relu, None])
def test_an_activation_that_is_not_a_module_class_is_refused(activation):
    with pytest.raises(TypeError, match="activation must be an nn.Module class"):
        RewardPredictor(IdentityEncoder(3), 2, activation=activation)


@pytest.mark.parametrize("particles", [0, -1, 2.0, True])
def test_a_particle_count_that_is_not_a_positive_int_is_refused(particles):
    predictor = make(None)
    s, c = predictor.encode(torch.randn(2, 3))
    with pytest.raises(ValueError, match="particles must be an int >= 1"):
        predictor.returns(s, c, torch.rand(2, 4, 3, 2), particles=particles)
    with pytest.raises(ValueError, match="particles must be an int >= 1"):
        predictor.model.step(s.expand(3, 2, 3), torch.rand(3, 2, 2), particles=particles)


def test_the_first_step_is_computed_once_per_candidate():
    """The first reward runs on one row per candidate (not per member and particle), the first
    prediction on one row per candidate and member; later steps on every particle."""
    predictor = make(None)
    reward_rows, model_rows = [], []
    reward, inputs = predictor.reward.forward, predictor.model.inputs  # every prediction builds its inputs
    predictor.reward.forward = lambda *parts: reward_rows.append(parts[0].shape[:2]) or reward(*parts)
    predictor.model.inputs = lambda state, *args: model_rows.append(state.shape[:2]) or inputs(state, *args)
    s, c = predictor.encode(torch.randn(2, 3))
    with torch.no_grad():
        predictor.returns(s, c, torch.rand(2, 5, 4, 2), particles=3, generator=torch.Generator().manual_seed(0))
    assert reward_rows == [(1, 10)] + [(3, 30)] * 3
    assert model_rows == [(3, 10)] + [(3, 30)] * 3
