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


def test_parts_drop_each_slice_as_the_whole_draw_does():
    """`SparseDropout.parts`: applied slice by slice (a Q ensemble run member by member), the
    masks are those one `forward` on the whole tensor draws; ``None`` where nothing drops."""
    x = torch.rand(5, 40, 16) + 0.5
    dropout = SparseDropout(0.05)
    torch.manual_seed(3)
    whole = dropout(x)
    torch.manual_seed(3)
    parts = dropout.parts(x[0].numel(), 5)
    by_slice = torch.stack([drop(x[i]) for i, drop in enumerate(parts)])
    torch.testing.assert_close(by_slice, whole)
    assert (whole == 0).any()
    assert dropout.eval().parts(x[0].numel(), 5) is None and SparseDropout(0.0).parts(10, 2) is None
    torch.manual_seed(4)
    dense = SparseDropout(0.3).parts(x[0].numel(), 2)  # above the sparse range: plain dropout per slice
    assert len(dense) == 2 and 0.2 < (dense[0](x[0]) == 0).float().mean() < 0.4
