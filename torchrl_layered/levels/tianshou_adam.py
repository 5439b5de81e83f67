"""`FusedAdamOptimizerFactory`: tianshou's Adam factory on the fused kernels (`objectives.optim.adam`).

Tianshou's ``AdamOptimizerFactory`` builds ``torch.optim.Adam`` with torch's default, which on
CPU loops over the parameters in Python; the small actor and critic networks of a level spend
much of a step in that loop. The same settings, the same update rule, fused where torch can.
"""
from __future__ import annotations

import torch
from tianshou.algorithm.optim import AdamOptimizerFactory

from torchrl_layered.objectives.optim import adam


class FusedAdamOptimizerFactory(AdamOptimizerFactory):
    """``AdamOptimizerFactory`` (``lr``, ``betas``, ``eps``, ``weight_decay``) whose Adam is fused where torch supports it."""

    def _create_optimizer_for_params(self, params) -> torch.optim.Optimizer:
        return adam(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)
