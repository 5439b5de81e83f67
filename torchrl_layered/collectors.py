"""`make_collector`: a TorchRL collector of a `Hierarchy` whose env carries the hierarchy's transform.

TorchRL 0.13 and later collectors add the transform themselves when asked
(``auto_register_policy_transforms=True``); older ones (TorchRL 0.12's ``Collector`` and
``SyncDataCollector``) do not know that argument, and the env has to be wrapped by hand:
``TransformedEnv(env, hierarchy.make_transform())``. `make_collector` does whichever the
collector supports, so the same line works on every TorchRL the package supports.
"""
from __future__ import annotations

import atexit
import functools
import importlib.util
import inspect
import socket
import weakref
from typing import Any, Callable

import torch
import torchrl.collectors as _collectors
from torchrl.envs import Compose, EnvBase, Transform, TransformedEnv

from torchrl_layered.hierarchy.hierarchy import Hierarchy
from torchrl_layered.hierarchy.transform import HierarchyTransform

AUTO_REGISTER = "auto_register_policy_transforms"

#: Where the collector's workers step the envs: this process, subprocesses of it
#: (``MultiSyncCollector`` / ``MultiAsyncCollector``), the actors of a Ray cluster (``RayCollector``),
#: or processes joined by torch.distributed (``DistributedCollector``, on one machine or on Slurm).
BACKENDS = ("local", "multiprocess", "ray", "distributed")


def default_collector_cls() -> type:
    """TorchRL's single-process collector: ``Collector``, or ``SyncDataCollector`` where that is all there is."""
    cls = getattr(_collectors, "Collector", None) or getattr(_collectors, "SyncDataCollector", None)
    if cls is None:  # pragma: no cover - every supported TorchRL has one of them
        raise ImportError("torchrl.collectors has neither Collector nor SyncDataCollector")
    return cls


def registers_policy_transforms(collector_cls: type) -> bool:
    """Whether ``collector_cls`` takes ``auto_register_policy_transforms`` (TorchRL 0.13 and later)."""
    for cls in inspect.getmro(collector_cls):
        init = vars(cls).get("__init__")
        if init is not None and AUTO_REGISTER in inspect.signature(init).parameters:
            return True
    return False


def _transforms(transform: Transform):
    if isinstance(transform, Compose):
        for inner in transform:
            yield from _transforms(inner)
    else:
        yield transform


def carries_hierarchy_transform(env: Any) -> bool:
    """Whether ``env`` (an env; constructors are not looked into) already has a `HierarchyTransform`."""
    while isinstance(env, TransformedEnv):
        if any(isinstance(t, HierarchyTransform) for t in _transforms(env.transform)):
            return True
        env = env.base_env
    return False


def with_transform(env: EnvBase, transform: Transform) -> TransformedEnv:
    """``env`` with ``transform`` appended (a transformed env gets it at the end of its transforms)."""
    if isinstance(env, TransformedEnv):
        return env.append_transform(transform)
    return TransformedEnv(env, Compose(transform))


def _build_with_transform(make_env: Callable[[], EnvBase], transform: Transform) -> EnvBase:
    env = make_env()
    if carries_hierarchy_transform(env):
        return env
    return with_transform(env, transform.clone())  # each process builds its own


def _free_port() -> int:
    """A TCP port no process listens on now: torch.distributed's rendezvous for this run."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _check_ray_has_what_torchrl_calls(ray_collector_cls: type) -> None:
    """TorchRL before 0.14 frees each batch with ``ray.internal.free``, which Ray 2.59 removed."""
    import sys

    import ray
    import ray.internal
    import torchrl

    source = inspect.getsource(sys.modules[ray_collector_cls.__module__])
    if "ray.internal.free" in source and not hasattr(ray.internal, "free"):
        raise ImportError(
            f"TorchRL {torchrl.__version__}'s RayCollector calls ray.internal.free, which Ray {ray.__version__} no "
            "longer has: pip install 'ray<2.59', or upgrade TorchRL (pip install 'torchrl>=0.14')"
        )


def backend_collector_cls(backend: str, sync: bool = True) -> type:
    """The TorchRL collector class of a `BACKENDS` entry (``sync=False``: batches as each worker delivers).

    Raises:
        ImportError: the backend's package is missing, with the line that installs it.
        ValueError: an unknown backend.
    """
    if backend == "local":
        return default_collector_cls()
    if backend == "multiprocess":
        return _collectors.MultiSyncCollector if sync else _collectors.MultiAsyncCollector
    if backend == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ImportError("the 'ray' collector backend needs Ray: pip install 'torchrl-layered[ray]' (or pip install ray)")
        from torchrl.collectors.distributed import RayCollector

        _check_ray_has_what_torchrl_calls(RayCollector)
        return RayCollector
    if backend == "distributed":
        if not torch.distributed.is_available():
            raise ImportError("the 'distributed' collector backend needs a torch build with torch.distributed")
        if torch.distributed.is_initialized():
            raise RuntimeError(
                "the 'distributed' collector backend starts torch.distributed's default process group, but this "
                "process already has one (from your code, or left by TorchRL < 0.14's Ray weight sync): call "
                "torch.distributed.destroy_process_group() first"
            )
        from torchrl.collectors.distributed import DistributedCollector

        return DistributedCollector
    raise ValueError(f"unknown collector backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def backend_defaults(backend: str, *, sync: bool = True, workers: int = 1, device: Any = None) -> dict[str, Any]:
    """The keyword arguments a backend's collector needs beyond TorchRL's defaults to run a hierarchy.

    Ray: one CPU per worker (and a share of the GPUs when ``device`` is CUDA), on the cluster
    ``ray.init()`` finds or starts. torch.distributed: workers launched on this machine
    (``launcher="mp"``; ``"submitit"`` for Slurm) over gloo, on a free port.
    """
    if backend == "ray":
        cuda = device is not None and torch.device(device).type == "cuda"
        return {"sync": sync, "remote_configs": {"num_cpus": 1, "num_gpus": 1 / workers if cuda else 0}}
    if backend == "distributed":
        return {"sync": sync, "launcher": "mp", "backend": "gloo", "tcp_port": _free_port()}
    return {}


def runs_in_workers(collector_cls: type) -> bool:
    """Whether ``collector_cls`` steps its envs in other processes (its policy there is a copy)."""
    return issubclass(collector_cls, (_collectors.MultiSyncCollector, _collectors.MultiAsyncCollector)) or (
        _distributes(collector_cls)
    )


def _distributes(collector_cls: type) -> bool:
    """Whether ``collector_cls`` is a distributed collector, which builds a collector per worker."""
    return any(
        "collector_kwargs" in inspect.signature(vars(cls)["__init__"]).parameters
        for cls in inspect.getmro(collector_cls) if "__init__" in vars(cls)
    )


def _inner_collector_cls(collector_class: Any) -> Any:
    """The class a distributed collector builds in each worker (its ``collector_class`` argument)."""
    named = {"single": default_collector_cls, "sync": lambda: _collectors.MultiSyncCollector,
             "async": lambda: _collectors.MultiAsyncCollector}
    if collector_class is None:
        return default_collector_cls()
    if isinstance(collector_class, str) and collector_class in named:
        return named[collector_class]()
    return collector_class


def _with_auto_register(collector_kwargs: Any) -> Any:
    """A distributed collector's ``collector_kwargs`` asking each worker's collector to add the transform."""
    if isinstance(collector_kwargs, (list, tuple)):
        return [{**kw, AUTO_REGISTER: True} for kw in collector_kwargs]
    return {**(collector_kwargs or {}), AUTO_REGISTER: True}


def _wrapped(env: Any, transform: Transform) -> Any:
    """``env`` (an env, a constructor or a list of them) with ``transform`` added where it lacks it."""
    if isinstance(env, (list, tuple)):
        return [_wrapped(e, transform) for e in env]
    if isinstance(env, EnvBase):
        return env if carries_hierarchy_transform(env) else with_transform(env, transform)
    return functools.partial(_build_with_transform, env, transform)


def _backend_envs(env: Any, backend: str, workers: int) -> Any:
    """The ``env`` argument of a backend's collector: one env or constructor per worker."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"make_collector needs an int workers >= 1; got {workers!r}")
    if backend == "local":
        if workers != 1 or isinstance(env, (list, tuple)):
            raise ValueError("collector backend 'local' runs one env in this process: pass one env and workers=1, "
                             "or choose backend='multiprocess', 'ray' or 'distributed' for more workers")
        return env
    if isinstance(env, (list, tuple)):
        if len(env) != workers:
            raise ValueError(f"make_collector got {len(env)} env constructors for workers={workers}; pass one "
                             "constructor (used by every worker) or one per worker")
        envs = list(env)
    else:
        envs = [env] * workers
    if any(isinstance(e, EnvBase) for e in envs):
        raise TypeError(f"collector backend {backend!r} builds its envs in the workers: pass an env constructor "
                        "(a function that returns the env, e.g. functools.partial(make_env, name, num_envs)), "
                        "not an env")
    if not all(callable(e) for e in envs):
        raise TypeError(f"collector backend {backend!r} needs env constructors; got {type(envs[0]).__name__}")
    return envs


def make_collector(env: Any, hierarchy: Hierarchy, collector_cls: type | None = None, *, backend: str | None = None,
                   workers: int = 1, **kwargs) -> Any:
    """A TorchRL collector of ``hierarchy`` on ``env``, with the hierarchy's transform on every env it steps.

    Where the collector registers policy transforms itself (TorchRL 0.13 and later) it is asked
    to (``auto_register_policy_transforms=True``, for a distributed collector in each worker's
    ``collector_kwargs``); otherwise the env, or each env constructor, is wrapped with
    ``hierarchy.make_transform()``. An env that already carries the transform is left as it is.

    ``backend`` picks the collector by where its workers run (`BACKENDS`), so a run moves from
    one process to several, or to a Ray cluster, by changing that one argument. With several
    workers each batch stacks theirs (``[workers, num_envs, T]``, or one worker's ``[num_envs, T]``
    with ``sync=False``); the workers act with a copy of the hierarchy, which
    ``collector.update_policy_weights_()`` refreshes after each learning step. A multiprocess
    collector still running when the script ends is shut down on its way out.

    Args:
        env: an env, an env constructor, or for collectors with workers a list of env
            constructors (one per worker); each worker builds its own env and transform.
        hierarchy: the policy.
        collector_cls: the TorchRL collector class; ``Collector`` by default (``SyncDataCollector``
            where there is no ``Collector``). Not with ``backend``.
        backend: ``local``, ``multiprocess``, ``ray`` or ``distributed`` (`backend_collector_cls`);
            its settings (`backend_defaults`) can be overridden through ``kwargs``, e.g.
            ``ray_init_config={"address": "auto"}`` or ``launcher="submitit"``.
        workers: processes (or Ray actors) stepping envs; 1 with ``backend="local"``.
        **kwargs: passed to the collector (``frames_per_batch``, ``total_frames``, ``device``,
            ``sync`` for the backends with workers, ...).

    Example:
        >>> collector = make_collector(env, hierarchy, frames_per_batch=400, total_frames=4000)
        >>> collector = make_collector(functools.partial(make_env, "Pendulum-v1", 4), hierarchy,
        ...                            backend="ray", workers=2, frames_per_batch=800, total_frames=8000)
        >>> for batch in collector:
        ...     hierarchy.extend(batch)
        ...     hierarchy.learn()
        ...     collector.update_policy_weights_()
        >>> collector.shutdown()
    """
    if not isinstance(hierarchy, Hierarchy):
        raise TypeError(f"make_collector needs a torchrl_layered Hierarchy as the policy; got {type(hierarchy).__name__}")
    if AUTO_REGISTER in kwargs:
        raise TypeError(f"make_collector adds the hierarchy's transform itself; do not pass {AUTO_REGISTER}")
    if not (isinstance(env, (EnvBase, list, tuple)) or callable(env)):
        raise TypeError(f"make_collector needs an env, an env constructor or a list of them; got {type(env).__name__}")
    if backend is not None:
        if collector_cls is not None:
            raise TypeError("make_collector takes a backend or a collector_cls, not both")
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"unknown collector backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        env = _backend_envs(env, backend, workers)
        sync = kwargs.pop("sync", True) if backend == "multiprocess" else kwargs.get("sync", True)
        collector_cls = backend_collector_cls(backend, sync=sync)
        kwargs = {**backend_defaults(backend, sync=sync, workers=workers, device=kwargs.get("device")), **kwargs}
    elif workers != 1:
        raise TypeError("make_collector takes workers only with a backend")
    collector_cls = default_collector_cls() if collector_cls is None else collector_cls
    if _distributes(collector_cls):
        inner = _inner_collector_cls(kwargs.get("collector_class"))
        if isinstance(inner, type) and registers_policy_transforms(inner):
            kwargs["collector_kwargs"] = _with_auto_register(kwargs.get("collector_kwargs"))
        else:
            env = _wrapped(env, hierarchy.make_transform())
        collector = collector_cls(env, hierarchy, **kwargs)
        if collector_cls.__name__ == "RayCollector":
            collector.update_policy_weights_()  # connects the weight sync before the first batch, as Ray asks
        return collector
    if registers_policy_transforms(collector_cls):
        kwargs[AUTO_REGISTER] = not carries_hierarchy_transform(env)
        collector = collector_cls(env, hierarchy, **kwargs)
    else:
        collector = collector_cls(_wrapped(env, hierarchy.make_transform()), hierarchy, **kwargs)
    if hasattr(collector, "procs"):  # the multiprocess backend's collectors
        atexit.register(_shut_down_at_exit, weakref.ref(collector))
    return collector


def _shut_down_at_exit(collector_ref: weakref.ref) -> None:
    """Shuts down a collector with worker processes, and its weight sync schemes, while the
    interpreter can still join processes and start threads. Without it a script that never calls
    ``shutdown()`` waits forever at exit for workers that wait for work, and on TorchRL 0.14.1 even
    one that does waits for the queue write of the shared-memory scheme's ``__del__``."""
    collector = collector_ref()
    if collector is None:
        return
    if not getattr(collector, "closed", False):
        collector.shutdown()
    for scheme in (getattr(collector, "_weight_sync_schemes", None) or {}).values():
        scheme.shutdown()
