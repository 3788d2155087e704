"""Losses of model inversion (DeepInversion, as used by Data-Free NAS).

Formulas follow the official code: plain (not squared) L2 norms in the
BatchNorm-statistics term, Frobenius norms of the whole batch in TV-L2, per-image L2 norm averaged
over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BNStatisticsLoss:
    """Forward hooks on every BatchNorm layer that measure how far a batch's feature statistics are
    from the layer's running statistics: R_l = ||var_l - running_var_l||_2 + ||mean_l - running_mean_l||_2,
    with the biased batch variance over (N, H, W). ``loss()`` returns sum_l w_l R_l with w_1 =
    ``first_bn_multiplier`` (the first layer sees pixels directly and is weighted up) and w_l = 1 after.

    Use as a context manager so the hooks never outlive the synthesis.
    """

    def __init__(self, model: nn.Module, first_bn_multiplier: float = 10.0) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.weights = [first_bn_multiplier] + [1.0] * (len(self.layers) - 1)
        self.distances: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles: list = []

    def __enter__(self) -> BNStatisticsLoss:
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, index: int):
        def hook(module: nn.modules.batchnorm._BatchNorm, inputs, output) -> None:
            var, mean = channel_var_mean(inputs[0])
            self.distances[index] = torch.linalg.vector_norm(var - module.running_var) + torch.linalg.vector_norm(
                mean - module.running_mean)

        return hook

    def loss(self) -> torch.Tensor:
        if any(d is None for d in self.distances):
            raise RuntimeError("BNStatisticsLoss.loss() called before a forward pass through the teacher.")
        return sum(w * d for w, d in zip(self.weights, self.distances))

    def unweighted(self) -> torch.Tensor:
        """Mean distance per layer: the quality metric 'BN-statistics distance'."""
        return torch.stack([d for d in self.distances]).mean()


def channel_var_mean(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Biased per-channel variance and mean over (N, H, W).

    Same values as ``torch.var_mean(x, dim=(0, 2, 3), unbiased=False)`` but about 5x faster on CPU
    (forward + backward): reduce the contiguous spatial dims first, then the batch in float64 so
    that E[x^2] - E[x]^2 does not lose precision.
    """
    spatial = tuple(range(2, x.dim()))
    n = x.numel() // x.shape[1]
    s1 = x.sum(spatial).double().sum(0)
    s2 = x.square().sum(spatial).double().sum(0)
    mean = s1 / n
    var = (s2 / n - mean.square()).clamp_min(0)
    return var.to(x.dtype), mean.to(x.dtype)


def total_variation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(TV-L1, TV-L2) over 4 neighbour directions: horizontal, vertical and both diagonals.

    TV-L1 is the mean absolute difference; TV-L2 the Frobenius norm of the whole batch's
    differences (as in DeepInversion), summed over directions.
    """
    diffs = (
        x[:, :, :, :-1] - x[:, :, :, 1:],
        x[:, :, :-1, :] - x[:, :, 1:, :],
        x[:, :, 1:, :-1] - x[:, :, :-1, 1:],
        x[:, :, :-1, :-1] - x[:, :, 1:, 1:],
    )
    tv_l1 = sum(d.abs().mean() for d in diffs)
    tv_l2 = sum(torch.linalg.vector_norm(d) for d in diffs)
    return tv_l1, tv_l2


def image_l2(x: torch.Tensor) -> torch.Tensor:
    """Per-image L2 norm, averaged over the batch."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1).mean()


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """-sum_k p_k log softmax(z)_k, averaged over the batch (= CE to one-hot targets for hard labels)."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def same_class_similarity(features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between the teacher's penultimate features of the batch's images that share a
    target class (each pair once). A diversity weight pushes it down, so images of one class spread out in the
    teacher's feature space instead of collapsing onto one mode: a per-batch form of the feature-distance
    diversity that contrastive model inversion (CMI) draws across a memory of past batches. Zero when no class
    has two images in the batch (the term then has no gradient)."""
    f = F.normalize(features.flatten(1), dim=1)
    same = classes[:, None] == classes[None, :]
    same.fill_diagonal_(False)
    if not same.any():
        return features.new_zeros(())
    return (f @ f.T)[same].mean()


def competition(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    """Adaptive DeepInversion's competition term: 1 - JS(student, teacher) on the softened outputs, so that
    minimising it pushes images toward where a student trained on the set so far still disagrees with the
    teacher. As the reference DeepInversion code computes it: probabilities at T = 3 clipped to [0.01, 0.99],
    the divergence as 0.5 KL(M||P) + 0.5 KL(M||Q) with M their mean, itself clipped to [0, 1]."""
    p = F.softmax(student_logits / temperature, dim=1)
    q = F.softmax(teacher_logits / temperature, dim=1)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    kl = F.kl_div(p.log(), m, reduction="batchmean") + F.kl_div(q.log(), m, reduction="batchmean")
    return 1.0 - (0.5 * kl).clamp(0.0, 1.0)
