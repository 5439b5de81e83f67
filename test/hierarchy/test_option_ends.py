"""`option_ends`: which options are over after an env step, against its definition."""
import itertools

import pytest
import torch

from torchrl_layered.hierarchy.transform import option_ends


@pytest.mark.parametrize("num_levels", [1, 2, 3, 4])
def test_an_option_ends_where_every_level_below_handed_control_back_or_the_episode_ended(num_levels):
    patterns = list(itertools.product([False, True], repeat=num_levels))
    cases = [(pattern, env_done) for pattern in patterns for env_done in (False, True)]
    level_done = torch.tensor([pattern for pattern, _ in cases])
    env_done = torch.tensor([[env_done] for _, env_done in cases])
    # laid out as a [2, n/2] batch: any batch shape works
    ends = option_ends(level_done.reshape(2, -1, num_levels), env_done.reshape(2, -1, 1)).reshape(-1, num_levels)
    for row, (pattern, done) in enumerate(cases):
        expected = [done or all(pattern[k + 1:]) for k in range(num_levels)]
        assert ends[row].tolist() == expected, (pattern, done)
