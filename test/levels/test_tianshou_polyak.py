"""`ForeachPolyak`: a Tianshou level's soft target update, fused, equals tianshou's own."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch
from tianshou.utils.lagged_network import LaggedNetworkCollection, polyak_parameter_update
from torchrl.data import Bounded, Unbounded

from torchrl_layered.levels import TianshouLevel, default_sac_config
from torchrl_layered.levels.tianshou_polyak import ForeachPolyak


def sac_level(tau: float = 0.1) -> TianshouLevel:
    level = TianshouLevel(default_sac_config(tau=tau), batch_size=8)
    level.initialize(Unbounded((3,)), Bounded(-2.0, 2.0, (1,)))
    return level


def moved_sources(level: TianshouLevel, seed: int) -> None:
    """Every source network away from its target, as after gradient steps."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pair in level.algorithm._lagged_networks._lagged_network_pairs:
            for p in pair.source.parameters():
                p.add_(torch.randn(p.shape, generator=g))


def target_parameters(level: TianshouLevel) -> list[torch.Tensor]:
    pairs = level.algorithm._lagged_networks._lagged_network_pairs
    return [p.detach().clone() for pair in pairs for p in pair.target.parameters()]


def test_the_fused_update_equals_tianshous_rule_on_every_target():
    level = sac_level(tau=0.1)
    lagged = level.algorithm._lagged_networks
    assert isinstance(lagged.polyak_parameter_update, ForeachPolyak)
    assert len(lagged._lagged_network_pairs) == 2  # SAC's two critics
    moved_sources(level, seed=0)
    reference = copy.deepcopy(level)
    for pair in reference.algorithm._lagged_networks._lagged_network_pairs:
        polyak_parameter_update(pair.target, pair.source, 0.1)
    before = target_parameters(level)
    level.algorithm._update_lagged_network_weights()
    after, expected = target_parameters(level), target_parameters(reference)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    for a, e in zip(after, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-7)


def test_the_fused_update_follows_a_loaded_state_and_a_pickled_copy():
    level, other = sac_level(), sac_level()
    moved_sources(other, seed=1)
    level.load_state_dict(other.state_dict())  # in place: the update's parameter lists stay the ones it moves
    level.algorithm._update_lagged_network_weights()
    pairs = level.algorithm._lagged_networks._lagged_network_pairs
    source = [p for pair in pairs for p in pair.source.parameters()]
    loaded = [p for pair in other.algorithm._lagged_networks._lagged_network_pairs for p in pair.source.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(source, loaded))
    copied = pickle.loads(pickle.dumps(level))  # a collector worker's copy updates its own networks
    moved_sources(copied, seed=2)
    kept = target_parameters(level)
    copied.algorithm._update_lagged_network_weights()
    assert all(torch.equal(a, b) for a, b in zip(target_parameters(level), kept))
    copied_pairs = copied.algorithm._lagged_networks._lagged_network_pairs
    update = copied.algorithm._lagged_networks.polyak_parameter_update
    assert update.targets[0] is next(copied_pairs[0].target.parameters())


def test_a_collection_without_networks_updates_nothing_and_one_added_later_is_updated():
    collection = LaggedNetworkCollection()
    update = ForeachPolyak(collection)
    collection.polyak_parameter_update(0.5)  # nothing to update, no error
    source = torch.nn.Linear(2, 2)
    target = collection.add_lagged_network(source)
    with torch.no_grad():
        source.weight.add_(1.0)
    before = target.module.weight.detach().clone()
    collection.polyak_parameter_update(0.5)
    assert len(update.targets) == 2
    torch.testing.assert_close(target.module.weight, 0.5 * before + 0.5 * source.weight)


def test_a_parameter_replaced_by_an_assigning_load_is_the_one_updated():
    level, other = sac_level(), sac_level()
    moved_sources(other, seed=3)
    level.algorithm._update_lagged_network_weights()  # the lists are read
    level.load_state_dict(other.state_dict(), assign=True)  # new parameter objects, not copies into the old
    pairs = level.algorithm._lagged_networks._lagged_network_pairs
    targets = [p for pair in pairs for p in pair.target.parameters()]
    sources = [p for pair in pairs for p in pair.source.parameters()]
    expected = [0.9 * t.detach() + 0.1 * s.detach() for t, s in zip(targets, sources)]  # tau 0.1
    level.algorithm._update_lagged_network_weights()
    for target, value in zip(targets, expected, strict=True):
        torch.testing.assert_close(target.detach(), value)


def test_a_target_that_does_not_match_its_source_is_refused():
    collection = LaggedNetworkCollection()
    ForeachPolyak(collection)
    collection.add_lagged_network(torch.nn.Linear(2, 2))
    collection._lagged_network_pairs[0].source = torch.nn.Linear(2, 3)
    with pytest.raises(ValueError, match="other parameters than its source"):
        collection.polyak_parameter_update(0.5)
