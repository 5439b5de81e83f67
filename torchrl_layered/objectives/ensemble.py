"""`EnsembleModelLoss`: trains a `ProbabilisticEnsemble` on (s, a, s') transitions."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import dispatch
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule

from torchrl_layered.modules.ensemble import ProbabilisticEnsemble


class EnsembleModelLoss(LossModule):
    """Gaussian negative log-likelihood of the state change, per member, plus bounds and termination.

    ``loss_model`` is the mean over members of the NLL of the normalised target under each
    member's Gaussian, plus ``logvar_bound_coef * (sum(max_logvar) - sum(min_logvar))`` that
    keeps the learned log-variance bounds tight; ``loss_termination`` is the binary
    cross-entropy of the termination head. With ``bootstrap=True`` every member trains on
    its own resample of the batch, which keeps the members diverse.

    Args:
        model: the ensemble.
        bootstrap: resample the batch per member (with replacement).
        logvar_bound_coef: weight of the log-variance bounds term.
        termination_coef: weight of the termination loss (0 to ignore terminations).
        update_normalizers: update the model's running input/target statistics from each batch.
    """

    @dataclass
    class _AcceptedKeys:
        observation: NestedKey = "observation"
        action: NestedKey = "action"
        context: NestedKey = "context"
        next_observation: NestedKey = ("next", "observation")
        terminated: NestedKey = ("next", "terminated")

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        model: ProbabilisticEnsemble,
        *,
        bootstrap: bool = True,
        logvar_bound_coef: float = 0.01,
        termination_coef: float = 1.0,
        update_normalizers: bool = True,
    ):
        super().__init__()
        self.model = model
        self.bootstrap = bootstrap
        self.logvar_bound_coef = logvar_bound_coef
        self.termination_coef = termination_coef
        self.update_normalizers = update_normalizers
        self._set_in_keys()

    def _set_in_keys(self):
        keys = self.tensor_keys
        self._in_keys = [keys.observation, keys.action, keys.next_observation, keys.terminated]
        self._out_keys = ["loss_model", "loss_termination", "model_nll"]

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        self._set_in_keys()

    @property
    def in_keys(self):
        return self._in_keys

    @property
    def out_keys(self):
        return self._out_keys

    def model_terms(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
        next_state: torch.Tensor,
        terminated: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The loss terms for flat tensors ``[N, *]`` (used by predictors that encode first)."""
        model = self.model
        inputs = model.inputs(state, context, action)
        target = next_state - state if model.predict_delta else next_state
        if self.update_normalizers and self.training:
            model.input_normalizer.update(inputs)
            model.target_normalizer.update(target)
        n, m = inputs.shape[0], model.num_members
        if self.bootstrap and m > 1:
            index = torch.randint(n, (m, n), device=inputs.device)
        else:
            index = torch.arange(n, device=inputs.device).expand(m, n)
        x = model.input_normalizer.normalize(inputs)[index]
        y = model.target_normalizer.normalize(target)[index]
        mean, logvar, term_logit = model.normalized_forward(x)
        nll = (((mean - y) ** 2) * torch.exp(-logvar) + logvar).mean(-1)  # [M, N]
        member_nll = nll.mean(-1)
        model.update_elites(((mean - y) ** 2).mean((-1, -2)))
        bounds = model.max_logvar.sum() - model.min_logvar.sum()
        term_target = terminated.reshape(n).to(term_logit.dtype)[index]
        return {
            "loss_model": member_nll.mean() + self.logvar_bound_coef * bounds,
            "loss_termination": self.termination_coef * F.binary_cross_entropy_with_logits(term_logit, term_target),
            "model_nll": member_nll.mean().detach(),
        }

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self.tensor_keys
        td = tensordict.reshape(-1)
        context = td.get(keys.context, None) if self.model.context_dim else None
        terms = self.model_terms(
            td.get(keys.observation).float(),
            td.get(keys.action).float(),
            td.get(keys.next_observation).float(),
            td.get(keys.terminated),
            context,
        )
        return TensorDict(terms, batch_size=[])
