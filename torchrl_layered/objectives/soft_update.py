"""`ForeachSoftUpdate`: TorchRL's `SoftUpdate` whose step moves every target in one foreach pass."""
from __future__ import annotations

import torch
from torchrl.objectives import SoftUpdate


class ForeachSoftUpdate(SoftUpdate):
    """``SoftUpdate`` (same arguments, same rule ``target <- target + tau * (source - target)``) in one kernel call.

    TorchRL's step walks its source and target TensorDicts and lerps each pair in turn: ~0.12 ms
    a step for a planner's 6-tensor value network on CPU, more than the few kernels cost. Here the
    pairs are read once, after ``init_``, and a step is one ``torch._foreach_lerp_``
    (~0.01 ms). The lists hold the same tensor objects as the updater's TensorDicts, which a
    module's ``.to()`` converts in place, so they follow a change of device or dtype as TorchRL's
    own step does. Targets whose source is lazy are still initialised on first use, as in TorchRL.
    """

    def init_(self) -> None:
        super().init_()
        self._pairs = None

    def step(self) -> None:
        if not self.initialized:
            raise RuntimeError(f"{type(self).__name__} must be initialized (`init_()`) before calling step()")
        modules = self.loss_module._modules
        for name in self._target_names:  # TorchRL fills a lazy source's target on this read
            if getattr(modules.get(name), "uninitialized_keys", None):
                getattr(self.loss_module, name)
                self._pairs = None
        if self._pairs is None:
            self._pairs = self._read_pairs()
        targets, sources = self._pairs
        with torch.no_grad():
            torch._foreach_lerp_(targets, sources, 1.0 - self.eps)

    def _read_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The target tensors and their sources, in the same order (targets never in a graph)."""
        targets, sources = [], []
        for key, source in self._sources.items(True, True):
            key = key if isinstance(key, tuple) else (key,)
            target = self._targets.get((f"target_{key[0]}", *key[1:]))
            if target.requires_grad:
                raise RuntimeError("the target parameter is part of a graph.")
            targets.append(target)
            sources.append(source)
        return targets, sources
