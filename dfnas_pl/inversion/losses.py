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
