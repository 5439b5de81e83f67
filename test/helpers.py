"""Test helpers: a scripted batched env, a deterministic level and a pure-Python reference."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from torchrl_layered import Hierarchy
from torchrl_layered.levels import DADSLevel, Level, PlannerLevel, RandomLevel, SPlaTESLevel, TDMPC2Level
from torchrl_layered.hierarchies.skills import cpu_tdmpc2_config
from torchrl_layered.levels.tianshou import TianshouLevel
from torchrl_layered.levels.tianshou_config import default_sac_config


def scripted_reward(instance: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """A reward that differs from step to step, so summed option rewards are telling."""
    return ((step * 7 + instance * 3) % 11).float() - 5.0


class ScriptedEnv(EnvBase):
    """A batched env whose episodes end on a script: ``schedules[i]`` lists (length, terminated).

    The observation ``[instance, global_step, episode]`` is unique per instance and step, so a
    transition can be traced back to where it came from. The schedule cycles.
    """

    def __init__(self, schedules: list[list[tuple[int, bool]]], discrete: int | None = None):
        n = len(schedules)
        super().__init__(batch_size=[n])
        width = max(len(s) for s in schedules)
        self._lengths = torch.tensor([[s[j % len(s)][0] for j in range(width)] for s in schedules])
        self._kinds = torch.tensor([[s[j % len(s)][1] for j in range(width)] for s in schedules])
        self._period = torch.tensor([len(s) for s in schedules])
        self.observation_spec = Composite(observation=Unbounded((n, 3)), shape=(n,))
        if discrete:
            self.action_spec = Categorical(discrete, shape=(n,), dtype=torch.long)
        else:
            self.action_spec = Bounded(-1.0, 1.0, shape=(n, 1))
        self.reward_spec = Unbounded((n, 1))
        flag = Categorical(2, shape=(n, 1), dtype=torch.bool)
        self.full_done_spec = Composite(done=flag.clone(), terminated=flag.clone(), truncated=flag.clone(), shape=(n,))
        self._instance = torch.arange(n)
        self._global = torch.zeros(n, dtype=torch.long)
        self._episode = torch.full((n,), -1, dtype=torch.long)
        self._step_in_episode = torch.zeros(n, dtype=torch.long)

    def _obs(self) -> torch.Tensor:
        return torch.stack([self._instance, self._global, self._episode], -1).float()

    def _reset(self, tensordict: TensorDictBase | None) -> TensorDictBase:
        n = self.batch_size[0]
        mask = torch.ones(n, dtype=torch.bool)
        if tensordict is not None and "_reset" in tensordict.keys():
            mask = tensordict.get("_reset").reshape(n)
        self._episode = torch.where(mask, self._episode + 1, self._episode)
        self._step_in_episode = torch.where(mask, 0, self._step_in_episode)
        zeros = torch.zeros(n, 1, dtype=torch.bool)
        return TensorDict(
            {"observation": self._obs(), "done": zeros, "terminated": zeros.clone(), "truncated": zeros.clone()},
            batch_size=self.batch_size,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        self._global = self._global + 1
        self._step_in_episode = self._step_in_episode + 1
        col = self._episode % self._period
        length = self._lengths[self._instance, col]
        kind = self._kinds[self._instance, col]
        end = self._step_in_episode >= length
        terminated = (end & kind).unsqueeze(-1)
        truncated = (end & ~kind).unsqueeze(-1)
        return TensorDict(
            {
                "observation": self._obs(),
                "reward": scripted_reward(self._instance, self._global).unsqueeze(-1),
                "done": terminated | truncated,
                "terminated": terminated,
                "truncated": truncated,
            },
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed):
        return seed


def echo_action(index: int, observation: torch.Tensor, level_input: torch.Tensor | None, spec) -> torch.Tensor:
    """A deterministic action from (observation, input): the reference can recompute it."""
    weights = torch.tensor([0.31, 0.017, 0.13, 0.23, 0.05, 0.11])[: observation.shape[-1]]
    h = (observation * weights).sum(-1) + 0.7 * index
    if level_input is not None:
        h = h + 0.29 * level_input.float().reshape(*level_input.shape[:1], -1).sum(-1)
    if isinstance(spec, Categorical):
        return (h.abs() * 100).floor().long() % spec.n
    return torch.sin(h).unsqueeze(-1).expand(-1, *spec.shape).clone()


class EchoLevel(Level):
    """A custom level whose action is a fixed function of what it sees (see `echo_action`)."""

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def get_action(self, tensordict: TensorDictBase) -> torch.Tensor:
        return echo_action(self.index, tensordict["observation"], tensordict.get("level_input", None), self.action_spec)


def reference_transitions(stream, intervals, act):
    """Pure-Python control flow of a hierarchy over one instance's steps.

    Args:
        stream: list of (obs, reward, next_obs, terminated, truncated) per env step.
        intervals: control_interval of every level, top first (None = episode end).
        act: act(k, obs, level_input) -> action tensor of level k.

    Returns one list per level of (start_obs, level_input, action, summed_reward, duration,
    end_obs, terminated, truncated) in the order the options end.
    """
    n = len(intervals)
    out = [[] for _ in range(n)]
    active, steps = 0, [0] * n
    action, done_flag, start = [None] * n, [False] * n, [None] * n
    reward, duration = [0.0] * n, [0] * n
    for obs, r, next_obs, term, trunc in stream:
        for k in range(active, n):  # top-down from the level in control
            steps[k] = steps[k] + 1 if k == active else 1
            level_input = action[k - 1] if k > 0 else None
            action[k] = act(k, obs, level_input)
            done_flag[k] = intervals[k] is not None and steps[k] >= intervals[k]
            start[k], reward[k], duration[k] = obs, 0.0, 0
        for k in range(n):
            reward[k] += r
            duration[k] += 1

        def emit(k):
            out[k].append((start[k], action[k - 1] if k else None, action[k], reward[k], duration[k], next_obs, term, trunc))

        k = n - 1
        emit(k)
        while k > 0 and done_flag[k]:  # bottom-up hand-back
            k -= 1
            emit(k)
        active = k
        if term or trunc:  # the episode end returns control to the top
            for j in range(k - 1, -1, -1):
                emit(j)
            active, steps = 0, [0] * n
    return out


def assert_same_transitions(got: list[tuple], expected: list[tuple], what: str, tol: float = 1e-3) -> None:
    """Equal as multisets of rows of float tuples, up to float summation order: every expected row
    takes a distinct got row that agrees with it within ``tol`` in every field."""
    assert len(got) == len(expected), f"{what}: {len(got)} transitions, expected {len(expected)}"

    def close(g, e):
        return all(
            (fg is None) == (fe is None)
            and (fg is None or (len(fg) == len(fe) and all(abs(a - b) <= tol for a, b in zip(fg, fe))))
            for fg, fe in zip(g, e)
        )

    unmatched = list(got)
    for e in expected:
        match = next((i for i, g in enumerate(unmatched) if close(g, e)), None)
        assert match is not None, f"{what}: no transition matches {e}; unmatched: {unmatched[:3]}"
        unmatched.pop(match)


# --------------------------------------------------- every learning level, tiny
#: The learning levels, by the names the matrix tests use.
LEARNING_KINDS = ("planner", "tdmpc2", "sac", "dads", "splates")

OPTION = Bounded(-1.0, 1.0, shape=(2,))


def tiny_tdmpc2():
    return cpu_tdmpc2_config(enc_dim=16, mlp_dim=16, latent_dim=16, batch_size=4, num_samples=16, num_elites=4,
                             num_pi_trajs=2, num_iterations=2, horizon=2)


def learning_level(kind: str, top: bool):
    """The level under test; below the top it takes the filler's 2-d option (skill levels declare their own)."""
    kw = {} if top else {"input_spec": OPTION, "control_interval": 3}
    if kind == "planner":
        return PlannerLevel(horizon=2, num_samples=16, num_iterations=2, warm_up_steps=20, batch_size=8, **kw)
    if kind == "tdmpc2":
        return TDMPC2Level(tiny_tdmpc2(), warm_up_steps=20, **kw)
    if kind == "sac":
        return TianshouLevel(default_sac_config(hidden_sizes=[16]), batch_size=8, warm_up_steps=20, **kw)
    if kind == "dads":
        return DADSLevel(2, tiny_tdmpc2(), control_interval=3, warm_up_steps=20)
    if kind == "splates":
        return SPlaTESLevel(2, tiny_tdmpc2(), control_interval=3, warm_up_steps=20)
    raise ValueError(kind)


def filler(top: bool) -> RandomLevel:
    """A random level: the top, or one below a parent taking the 2-d `OPTION`."""
    return RandomLevel() if top else RandomLevel(input_spec=OPTION, control_interval=2)


def learning_stack(kind: str, depth: int) -> list:
    """Three levels with the one under test at ``depth``; a skill level gets a planner as its parent."""
    levels = [filler(top=i == 0) for i in range(3)]
    levels[depth] = learning_level(kind, top=depth == 0)
    if kind in ("dads", "splates"):
        levels[depth - 1] = PlannerLevel(horizon=2, num_samples=16, num_iterations=2, warm_up_steps=20, batch_size=8,
                                         **({} if depth == 1 else {"input_spec": OPTION, "control_interval": 3}))
    return levels


#: The control intervals of `echo_hierarchy`'s levels, top first.
ECHO_INTERVALS = [None, 3, 2]


def echo_hierarchy(env):
    """Three `EchoLevel`s with the control intervals `ECHO_INTERVALS` over ``env``."""
    levels = [
        EchoLevel(k, control_interval=ci, input_spec=Bounded(-1.0, 1.0, shape=(k,)) if k else None)
        for k, ci in enumerate(ECHO_INTERVALS)
    ]
    return Hierarchy(levels, env=env)


def rows(values, has_input):
    out = []
    for j in range(values[0].shape[0]):
        out.append(tuple(
            None if v is None else tuple(float(x) for x in v[j].reshape(-1)) for v in values
        ))
    return out


def assert_matches_reference(hierarchy, batches):
    """Rebuilds each instance's stream from the batches and checks every level's transitions."""
    time = batches[0].shape[-1]
    data = torch.cat([b.reshape(-1, time) for b in batches], dim=1)
    specs = hierarchy.action_specs

    def act(k, obs, level_input):
        li = None if level_input is None else level_input.unsqueeze(0)
        return echo_action(k, obs.unsqueeze(0), li, specs[k])[0]

    got = [[] for _ in ECHO_INTERVALS]
    for batch in batches:
        for k, t in enumerate(hierarchy.transitions(batch)):
            got[k] += rows([t["observation"], t.get("level_input", None), t["action"], t["next", "reward"],
                            t["next", "duration"], t["next", "observation"], t["next", "terminated"],
                            t["next", "truncated"]], k > 0)
    expected = [[] for _ in ECHO_INTERVALS]
    for i in range(data.shape[0]):
        d = data[i]
        stream = [
            (d["observation"][t], float(d["next", "reward"][t]), d["next", "observation"][t],
             bool(d["next", "terminated"][t]), bool(d["next", "truncated"][t]))
            for t in range(d.shape[0])
        ]
        for k, trans in enumerate(reference_transitions(stream, ECHO_INTERVALS, act)):
            for start, li, a, r, dur, end, term, trunc in trans:
                expected[k] += rows([start[None], None if li is None else li[None], a[None], torch.tensor([[r]]),
                                     torch.tensor([[dur]]), end[None], torch.tensor([[term]]),
                                     torch.tensor([[trunc]])], k > 0)
    episode_ends = int(data["next", "done"].sum())
    assert episode_ends > 0, "the test needs episode ends"
    for k in range(len(ECHO_INTERVALS)):
        assert_same_transitions(got[k], expected[k], f"level {k}")


def without_process_group() -> None:
    """Drops a torch.distributed default group left in this process (TorchRL < 0.14's Ray weight sync
    leaves one behind), so that a `distributed` collector can start its own."""
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def failing_compile(fn, **kwargs):
    """Stands in for ``torch.compile`` where no compiler works: the compiled function raises at its call."""
    def run(*args, **kw):
        raise RuntimeError("no C++ compiler found\nmore detail")
    return run


def fast_bfloat16() -> bool:
    """Whether this machine has fast bfloat16 matmuls (a GPU, or a CPU with AMX or AVX512-BF16):
    where ``planning_dtype="bfloat16"`` is meant to run (on an AMD EPYC with AVX512-BF16 its
    matmuls run 2.2x float32's). Elsewhere it runs slower than float32, so its learning checks
    are left to the machines it is for."""
    cpu = torch.cpu
    return (torch.cuda.is_available() or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
            or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())


#: Marks a learning check in bfloat16: run where bfloat16 is meant to run (`fast_bfloat16`).
BFLOAT16_UNITS = pytest.mark.skipif(not fast_bfloat16(), reason="no fast bfloat16 matmuls (a GPU, AMX or AVX512-BF16)")

#: The ``planning_dtype`` values a learning check runs with here.
PLANNING_DTYPES = ["float32", pytest.param("bfloat16", marks=BFLOAT16_UNITS)]
