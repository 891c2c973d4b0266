"""`jocor`: JoCoR (Wei et al., CVPR 2020), as the reference hongxin001/JoCoR algorithm/jocor.py and
loss.py run it (SPEC §6). One Adam over both networks; per example the joint loss
(1 - co_lambda) * (CE1 + CE2) + co_lambda * (KL(p1 || p2) + KL(p2 || p1)); the batch's smallest joint
losses update both networks with their mean. The forget rate is half the noise rate for pair-flip noise.
The shared schedule and loop: memomentum/methods/small_loss.py."""
import torch.nn.functional as F

from memomentum.methods.method import Method
from memomentum.methods.small_loss import SmallLossTrial, adam, baseline_defaults, smallest


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
    halve_for_pairflip = True

    def optimizers(self, model1, model2):
        return (adam(list(model1.parameters()) + list(model2.parameters()), self.cfg),)

    def select_and_loss(self, logits1, logits2, labels, n_keep):
        loss, keep = jocor_loss(logits1, logits2, labels, n_keep, self.cfg.co_lambda)
        return loss, loss.detach(), keep, keep


METHOD = Method("jocor", "JoCoR (CVPR 2020, SPEC §6): two networks trained jointly with an agreement loss on "
                "their small-loss examples", JoCoRTrial, published="JoCoR", networks=2, min_epochs=2,
                defaults=baseline_defaults)
