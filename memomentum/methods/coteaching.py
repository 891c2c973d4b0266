"""`coteaching`: Co-teaching (Han et al., NeurIPS 2018), as the reference bhanML/Co-teaching main.py and
loss.py run it (SPEC §6). Each network ranks the batch by its own per-example cross-entropy and keeps
its smallest-loss examples; network 1 is updated on the examples network 2 kept and vice versa, each
with its own Adam. The shared schedule and loop: memomentum/methods/small_loss.py."""
from dataclasses import dataclass

import torch.nn.functional as F

from memomentum.methods.method import Method
from memomentum.methods.small_loss import (DEFAULTS, EPOCH_COLUMNS, SmallLossOptions, SmallLossTrial, adam,
                                           smallest)


@dataclass(frozen=True)
class CoTeachingOptions(SmallLossOptions):
    coteaching_double_mean: bool = False  # divide the mean loss by the kept count again, as the reference loss.py
    #                                       does (a much smaller step; off = the plain mean)


def coteaching_loss(logits1, logits2, labels, n_keep: int, double_mean: bool = False):
    """(loss of both networks, kept by network 1, kept by network 2): each network's mean cross-entropy
    over the examples the OTHER kept. Their sum has the gradients of the two separate losses, since each
    term depends on one network only. `double_mean` divides by n_keep again, as the reference."""
    ce1 = F.cross_entropy(logits1, labels, reduction="none")
    ce2 = F.cross_entropy(logits2, labels, reduction="none")
    keep1, keep2 = smallest(ce1, n_keep), smallest(ce2, n_keep)
    loss = ce1[keep2].mean() + ce2[keep1].mean()
    return (loss / n_keep if double_mean else loss), keep1, keep2


class CoTeachingTrial(SmallLossTrial):
    stage = "coteaching"

    def optimizers(self, model1, model2):
        return adam(model1.parameters(), self.cfg), adam(model2.parameters(), self.cfg)

    def select_and_loss(self, logits1, logits2, labels, n_keep):
        loss, keep1, keep2 = coteaching_loss(logits1, logits2, labels, n_keep, self.options.coteaching_double_mean)
        return loss, loss.detach() / 2, keep1, keep2  # reported: the mean of the two networks' losses


METHOD = Method("coteaching", "Co-teaching (NeurIPS 2018, SPEC §6): two networks teach each other with their "
                "small-loss examples", CoTeachingTrial, published="Co-teaching", networks=2, min_epochs=2,
                options=CoTeachingOptions, defaults=DEFAULTS, columns={"epoch": EPOCH_COLUMNS})
