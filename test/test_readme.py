"""The README's example runs as printed: with `Collector` where it registers the hierarchy's
transform itself (TorchRL 0.13 and later), and its `SyncDataCollector` variant where TorchRL has
that collector (0.12)."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torchrl.collectors

from torchrl_layered.collectors import registers_policy_transforms

README = Path(__file__).resolve().parent.parent / "README.md"


def example_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("\n## Example\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def run(code: str, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def check(namespace: dict) -> None:
    hierarchy, transitions = namespace["hierarchy"], namespace["transitions"]
    assert len(transitions) == len(hierarchy.levels) == 2
    assert transitions[1].numel() == 400  # every primitive step of the last batch
    assert 0 < transitions[0].numel() < 400 and (transitions[0]["next", "duration"] <= 10).all()


def test_the_readme_has_the_example_and_its_sync_data_collector_variant():
    blocks = example_blocks()
    assert len(blocks) == 2
    assert "auto_register_policy_transforms=True" in blocks[0] and "SyncDataCollector(" in blocks[1]


@pytest.mark.skipif(not registers_policy_transforms(torchrl.collectors.Collector),
                    reason="this TorchRL's Collector does not register policy transforms (TorchRL 0.13 and later do)")
def test_the_readme_example_runs():
    check(run(example_blocks()[0]))


@pytest.mark.skipif(not hasattr(torchrl.collectors, "SyncDataCollector"),
                    reason="this TorchRL has no SyncDataCollector (removed in TorchRL 0.13)")
@pytest.mark.filterwarnings("ignore:SyncDataCollector has been deprecated:DeprecationWarning")
def test_the_readme_example_runs_with_its_sync_data_collector_variant():
    example, variant = example_blocks()
    head, rest = example.split("collector = Collector(", 1)
    loop = rest[rest.index("for batch in collector:"):]
    check(run(head + variant + loop))


def scaling_out_example() -> str:
    text = README.read_text()
    section = text.split("\n## Scaling out\n", 1)[1].split("\n## ", 1)[0]
    blocks = [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", section, re.S)]
    return next(b for b in blocks if "make_collector(" in b)


def test_the_scaling_out_example_runs_on_a_local_ray_cluster():
    pytest.importorskip("ray")
    from torchrl_layered import Hierarchy
    from torchrl_layered.envs import make_env
    from torchrl_layered.levels import PlannerLevel

    hierarchy = Hierarchy([PlannerLevel(horizon=2, num_samples=16, num_iterations=2, warm_up_steps=400,
                                        batch_size=16)], env=make_env("Pendulum-v1", 4))
    run(scaling_out_example(), {"make_env": make_env, "hierarchy": hierarchy})
    level = hierarchy.levels[0]
    assert level.env_steps == 1200 and level.num_gradient_updates > 0  # 3 batches of 2 workers x 4 envs x 50
