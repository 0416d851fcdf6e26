"""A classifier behind its detector, answering queries as a deployed system would: the query-based
black box's target (docs/method.md section 8.3.1).

For a batch of queries the system returns the model's prediction logits and, per query, whether
the detector *rejected* it: the detector's score under the predicted class exceeds T, the
threshold at false-positive rate ``fpr`` on the clean validation images (the same threshold as
robust accuracy with rejection). A rejected query tells the attacker nothing but "rejected":
score-based attacks (Square) read it as the worst possible score, label-only attacks
(HopSkipJump) as "not adversarial" (:meth:`robustctl.attacks.base.Attack.answer`). An attack
*succeeds* on an image only with an example the system classifies wrongly **and** accepts.

The system counts what it answered (:attr:`DeployedSystem.queries`) and rejected
(:attr:`DeployedSystem.rejected`), so a run can report the share of an attack's queries the
detector turned away.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robustctl.defenses.base import Probe
from robustctl.inference import eval_mode, prediction_logits


class DeployedSystem(nn.Module):
    """``model`` + ``detector`` with rejection threshold ``threshold`` (module docstring)."""

    def __init__(self, model: nn.Module, detector: Any, threshold: float) -> None:
        super().__init__()
        self.model = model
        self.detector = detector
        self.threshold = float(threshold)
        self.queries = 0
        self.rejected = 0
        # the wrapper's mode mirrors the model's, so a caller's eval-and-restore (the attack
        # base's) gives the model back in the mode it had
        self.train(model.training)

    def predict_logits(self, x: Tensor) -> Tensor:
        """The model's prediction logits (what the base attack re-checks with; no rejection)."""
        return prediction_logits(self.model, x)

    def forward(self, x: Tensor) -> Tensor:
        return self.predict_logits(x)

    @torch.no_grad()
    def answer(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(prediction logits [N, K], rejected [N] bool) of the queries ``x``: one forward pass
        of the model and the detector's score under each query's prediction, in eval mode
        (a deployed system's batch-norm statistics do not move with its queries)."""
        with eval_mode(self.model), eval_mode(self.detector):
            probe = Probe(self.model, x, self.detector.layers)
            scores = self.detector.score_probe(probe, probe.predictions)
        rejected = scores > self.threshold
        self.queries += len(x)
        self.rejected += int(rejected.sum())
        return probe.logits, rejected

    def misclassified_and_accepted(self, x: Tensor, y: Tensor) -> Tensor:
        """[N] bool, on ``x``'s device: the system answers a wrong class for ``x`` and does not
        reject it (what an attack on the system must achieve)."""
        logits, rejected = self.answer(x)
        return (logits.argmax(1) != y) & ~rejected
