"""`trainers/config.py`: every default of the app is declared once, in the dataclasses and the factories' signatures."""
from __future__ import annotations

import inspect
from dataclasses import MISSING, asdict, fields, is_dataclass

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

import torchrl_layered.train as app
from torchrl_layered.trainers import (
    HIERARCHIES, ConfigError, TrainConfig, compose_config, parse_config, register_hierarchy,
)
from torchrl_layered.trainers.config import CONFIG_DIR, group_options


def as_config(value):
    """A Python default as the config holds it: tuples as lists."""
    if isinstance(value, (tuple, list)):
        return [as_config(v) for v in value]
    if isinstance(value, dict):
        return {k: as_config(v) for k, v in value.items()}
    return value


def signature_defaults(factory) -> dict:
    params = list(inspect.signature(factory).parameters.values())[1:]  # the env aside
    return {p.name: as_config(p.default) for p in params if p.default is not p.empty}


def test_the_composed_default_config_is_the_dataclasses_defaults():
    composed = OmegaConf.to_container(compose_config([]), resolve=True)
    expected = {}
    for f in fields(TrainConfig):
        if f.name in ("hierarchy", "env"):  # chosen from their groups
            continue
        default = f.default_factory() if f.default is MISSING else f.default
        expected[f.name] = asdict(default) if is_dataclass(default) else default
    assert {k: v for k, v in composed.items() if k not in ("hierarchy", "env")} == expected
    parsed = parse_config(compose_config([]))
    assert parsed == TrainConfig(hierarchy=parsed.hierarchy, env=parsed.env)
    assert parsed.num_threads == 1


def test_the_yaml_files_restate_no_default():
    assert set(OmegaConf.load(CONFIG_DIR / "train.yaml")) == {"defaults", "hydra"}
    assert not (CONFIG_DIR / "hierarchy").exists() or not list((CONFIG_DIR / "hierarchy").glob("*.yaml"))
    for path in (CONFIG_DIR / "logger").glob("*.yaml"):
        assert dict(OmegaConf.load(path)) == {"backend": path.stem}


@pytest.mark.parametrize("name", sorted(HIERARCHIES))
def test_every_registered_hierarchy_composes_with_its_factory_defaults(name):
    hierarchy = OmegaConf.to_container(compose_config([f"hierarchy={name}"]).hierarchy, resolve=True)
    assert hierarchy == {"name": name, "kwargs": signature_defaults(HIERARCHIES[name])}


@pytest.mark.parametrize("name", sorted(HIERARCHIES))
def test_every_hierarchy_option_is_overridden_without_a_plus(name):
    ints = {k: v for k, v in signature_defaults(HIERARCHIES[name]).items() if type(v) is int}
    assert ints, "each shipped hierarchy has integer options"
    overrides = [f"hierarchy.kwargs.{k}={v + 1}" for k, v in ints.items()]
    kwargs = parse_config(compose_config([f"hierarchy={name}", *overrides])).hierarchy.kwargs
    assert {k: kwargs[k] for k in ints} == {k: v + 1 for k, v in ints.items()}
    assert app.check_overrides([f"hierarchy={name}", *overrides]) is None


def test_unknown_keys_are_still_refused_naming_the_known_ones():
    with pytest.raises(ConfigError) as refused:
        parse_config(compose_config(["+collector.foo=1"]))
    assert str(refused.value) == ("collector.foo is not a known key; the keys of collector are: num_envs, "
                                  "frames_per_batch, total_frames, asynchronous, backend, workers, sync, backend_kwargs")
    with pytest.raises(ConfigError, match=r"hierarchy.kwargs.bogus is not an option of hierarchy 'random'; its"):
        parse_config(compose_config(["hierarchy=random", "+hierarchy.kwargs.bogus=1"]))


def test_the_app_lists_the_registered_hierarchies_as_options():
    assert set(HIERARCHIES) <= set(group_options("hierarchy"))
    options = ", ".join(group_options("hierarchy"))
    message = app.check_overrides(["hierarchy=bogus"])
    assert message == f"hierarchy=bogus is not a known hierarchy config; choose one of: {options}"


def test_a_hierarchy_registered_later_is_selectable_with_its_defaults():
    @register_hierarchy("late_toy")
    def late_toy(env, *, width: int = 3, sizes: tuple[int, ...] = (4, 4)):
        raise AssertionError("not built here")

    try:
        cfg = compose_config(["hierarchy=late_toy", "hierarchy.kwargs.width=5"])
        assert OmegaConf.to_container(cfg.hierarchy) == {"name": "late_toy", "kwargs": {"width": 5, "sizes": [4, 4]}}
        assert "late_toy" in group_options("hierarchy")
    finally:
        del HIERARCHIES["late_toy"]
        ConfigStore.instance().repo["hierarchy"].pop("late_toy.yaml", None)


def test_a_run_saved_with_only_some_hierarchy_options_resumes_when_the_rest_are_the_defaults():
    """Runs saved before every option was in the config left the defaults out: they ran with them."""
    from torchrl_layered.trainers.trainer import changed_settings, flat_config

    config = parse_config(compose_config(["hierarchy=planner_splates", "env=maze2d_open"]))
    saved = flat_config(asdict(config))
    partial = {key: value for key, value in saved.items() if key != "hierarchy.kwargs.horizon"}
    assert changed_settings(config, {"run": {"config": partial}}) == []
    changed = parse_config(compose_config(["hierarchy=planner_splates", "env=maze2d_open", "hierarchy.kwargs.horizon=7"]))
    assert changed_settings(changed, {"run": {"config": partial}}) == ["hierarchy.kwargs.horizon: (unset) -> 7"]
