"""`jocor`: JoCoR (Wei et al., CVPR 2020), as the reference hongxin001/JoCoR algorithm/jocor.py and
loss.py run it (SPEC §6). One Adam over both networks; per example the joint loss
(1 - co_lambda) * (CE1 + CE2) + co_lambda * (KL(p1 || p2) + KL(p2 || p1)); the batch's smallest joint
losses update both networks with their mean. The forget rate is the noise rate for every noise type this
project has, pair-flip included: the reference's constructor (algorithm/jocor.py, `if args.noise_type ==
"asymmetric": forget_rate = args.noise_rate / 2`) halves it only for its own `asymmetric` noise, a class
map that flips about half of the classes; its `pairflip` (y -> y + 1 mod C, ours) keeps the full rate.
Version 2: version 1 halved the rate under pair-flip noise (following an earlier, wrong sentence of SPEC §6).
The shared schedule and loop: memomentum/methods/small_loss.py."""
from dataclasses import dataclass

import torch.nn.functional as F

from memomentum.errors import ConfigError
from memomentum.methods.method import Method
from memomentum.methods.small_loss import (DEFAULTS, EPOCH_COLUMNS, SmallLossOptions, SmallLossTrial, adam,
                                           smallest)


@dataclass(frozen=True)
class JoCoROptions(SmallLossOptions):
    co_lambda: float = 0.9  # weight of the two networks' agreement (symmetric KL) term (cifar100: 0.85)

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.co_lambda <= 1.0:
            raise ConfigError(f"co_lambda={self.co_lambda} must lie in [0, 1]")


def jocor_loss(logits1, logits2, labels, n_keep: int, co_lambda: float):
    """(mean joint loss over the kept examples, the kept examples): the same selection for both networks.
    The KL terms keep their gradient through both distributions, as the reference's kl_div on softmax."""
    log_p1, log_p2 = F.log_softmax(logits1, dim=1), F.log_softmax(logits2, dim=1)
    ce = F.nll_loss(log_p1, labels, reduction="none") + F.nll_loss(log_p2, labels, reduction="none")
    kl = (F.kl_div(log_p1, log_p2, reduction="none", log_target=True).sum(1)  # KL(p2 || p1)
          + F.kl_div(log_p2, log_p1, reduction="none", log_target=True).sum(1))  # KL(p1 || p2)
    joint = (1 - co_lambda) * ce + co_lambda * kl
    keep = smallest(joint, n_keep)
    return joint[keep].mean(), keep


class JoCoRTrial(SmallLossTrial):
    stage = "jocor"

    def optimizers(self, model1, model2):
        return (adam(list(model1.parameters()) + list(model2.parameters()), self.cfg),)

    def select_and_loss(self, logits1, logits2, labels, n_keep):
        loss, keep = jocor_loss(logits1, logits2, labels, n_keep, self.options.co_lambda)
        return loss, loss.detach(), keep, keep


METHOD = Method("jocor", "JoCoR (CVPR 2020, SPEC §6): two networks trained jointly with an agreement loss on "
                "their small-loss examples", JoCoRTrial, published="JoCoR", networks=2, min_epochs=2,
                options=JoCoROptions, columns={"epoch": EPOCH_COLUMNS}, version=2,
                # the README's lambda for each data set (the code's default 0.1 is not what the paper used)
                defaults={**DEFAULTS, "cifar100": {**DEFAULTS["cifar100"], "co_lambda": 0.85}})
