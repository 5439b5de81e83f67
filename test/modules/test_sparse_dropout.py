"""`SparseDropout` drops i.i.d. Bernoulli(p) entries like ``nn.Dropout``, scales the rest, and back-propagates the mask."""
import math

import pytest
import torch

from torchrl_layered.modules.sparse_dropout import SparseDropout, dropped_positions


def test_positions_are_distinct_sorted_and_in_range():
    torch.manual_seed(0)
    for numel, p in [(1, 0.01), (7, 0.05), (1000, 0.01), (200_000, 0.002), (50_000, 0.1)]:
        positions = dropped_positions(numel, p)
        assert positions.dtype == torch.long
        assert bool((positions >= 0).all() and (positions < numel).all())
        assert bool((positions[1:] > positions[:-1]).all())


def test_each_entry_is_dropped_with_probability_p_independently():
    torch.manual_seed(0)
    numel, p, draws = 12, 0.05, 20_000
    hits = torch.zeros(numel)
    counts = torch.zeros(draws)
    pairs = 0
    for i in range(draws):
        dropped = torch.zeros(numel, dtype=torch.bool)
        dropped[dropped_positions(numel, p)] = True
        hits += dropped
        counts[i] = dropped.sum()
        pairs += int(dropped[0] and dropped[1])
    # every position at rate p (5 standard deviations)
    assert torch.allclose(hits / draws, torch.full((numel,), p), atol=5 * math.sqrt(p * (1 - p) / draws))
    # the number dropped is Binomial(numel, p): its variance, and independence of neighbours
    assert abs(counts.var().item() - numel * p * (1 - p)) < 0.1 * numel * p * (1 - p)
    assert abs(pairs / draws - p * p) < 5 * math.sqrt(p * p / draws)


def test_a_large_draw_drops_the_expected_fraction():
    torch.manual_seed(1)
    numel, p = 2_000_000, 0.01
    fraction = dropped_positions(numel, p).numel() / numel
    assert abs(fraction - p) < 5 * math.sqrt(p * (1 - p) / numel)


@pytest.mark.parametrize("p", [0.01, 0.3])
def test_kept_entries_are_scaled_and_the_gradient_is_the_mask(p):
    torch.manual_seed(2)
    x = (torch.rand(4, 300, 64) + 0.5).requires_grad_(True)
    dropout = SparseDropout(p)
    y = dropout(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - p) < 0.02
    torch.testing.assert_close(y[kept], (x / (1 - p))[kept])
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, kept.float() / (1 - p))
    with torch.no_grad():
        assert abs(1 - (dropout(x) != 0).float().mean().item() - p) < 0.02


def test_eval_mode_and_zero_rate_are_the_identity_and_bad_rates_are_refused():
    x = torch.randn(3, 5)
    assert SparseDropout(0.0)(x) is x
    assert SparseDropout(0.5).eval()(x) is x
    for p in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match="0 <= p < 1"):
            SparseDropout(p)
