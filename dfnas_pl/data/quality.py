"""Quality measures of a synthetic set that need more than one batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def within_class_diversity(features: torch.Tensor, classes: torch.Tensor) -> float:
    """Mean pairwise cosine distance between the teacher's penultimate features of images of the
    same class (0 = identical; higher = more diverse). Computed over a whole round, because a
    batch often holds one image per class. NaN if no class has two images."""
    f = F.normalize(features.flatten(1).float(), dim=1)
    total, pairs = 0.0, 0
    for k in classes.unique():
        fk = f[classes == k]
        m = len(fk)
        if m < 2:
            continue
        total += float((1 - fk @ fk.T).sum() / 2)  # each pair once; the diagonal is 0
        pairs += m * (m - 1) // 2
    return total / pairs if pairs else float("nan")
