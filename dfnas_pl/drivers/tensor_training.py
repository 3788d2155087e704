"""The ground truth's fast training loop: a plain PyTorch loop over images held in memory as tensors.

Why not the Lightning retraining module: a ground-truth job trains a network of a few MFLOPs for a few
epochs, so per-step overhead (a DataLoader decoding PIL images one by one, the transforms, Lightning's
hooks and logging) is a large share of its time on a CPU. Here the real split is decoded once per
ground-truth directory (:func:`materialise`), and every job reads the same tensors; augmentation (random
shift and horizontal flip) is done on whole batches. ``bench/results.md`` holds the measured ratio of
both loops on the same model and batch.

What makes a job low-noise and cheap (the recipe's knobs, all in :class:`TrainingRecipe`): the whole
training split, few epochs, SGD Nesterov with linear warm-up and cosine decay to 0, label smoothing, an
exponential moving average (EMA) of the weights for evaluation, and flip test-time augmentation. The
data order (the permutation, shifts and flips of every step) depends on the seed only, never on the
architecture, so two architectures of one seed see exactly the same batches.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dfnas_pl.data.tensor_loader import window
from dfnas_pl.utils.io import atomic_write_bytes

TENSORS_FORMAT = "dfnas_pl.groundtruth-tensors/1"


def materialise(dm: Any, path: Path) -> Path:
    """Decode ``dm``'s training split (without augmentation) and test set once into ``path``."""
    import io

    if path.exists():
        return path

    def stack(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        fast = _stack_at_once(dataset)
        if fast is not None:
            return fast
        xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
        return torch.stack(xs).contiguous(), torch.as_tensor(ys, dtype=torch.long)

    dm.hparams.augment = False
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    train_x, train_y = stack(dm.train_set)
    test_x, test_y = stack(dm.test_set)
    buf = io.BytesIO()
    torch.save({"format": TENSORS_FORMAT, "train_x": train_x, "train_y": train_y, "test_x": test_x,
                "test_y": test_y}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _stack_at_once(dataset: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """MNIST-like torchvision datasets (a uint8 tensor of grey images): the evaluation transform applied to
    the whole split in one call (seconds instead of a minute of per-image calls), checked against the
    per-image path on a few images. None where the dataset is not of that kind."""
    base, index = dataset, None
    if hasattr(base, "indices") and hasattr(base, "dataset"):  # a Subset (the train split)
        base, index = base.dataset, torch.as_tensor(base.indices)
    data, targets = getattr(base, "data", None), getattr(base, "targets", None)
    if not (isinstance(data, torch.Tensor) and data.dtype == torch.uint8 and data.dim() == 3
            and isinstance(targets, torch.Tensor) and base.transform is not None):
        return None
    images, labels = data.unsqueeze(1), targets
    if index is not None:
        images, labels = images[index], labels[index]
    x = torch.as_tensor(base.transform(images)).float().contiguous()
    for i in torch.linspace(0, len(dataset) - 1, 8).long().tolist():
        one, label = dataset[i]
        if x[i].shape != one.shape or not torch.allclose(x[i], one, atol=1e-5) or int(labels[i]) != int(label):
            return None
    return x, labels.long().clone()


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    data = torch.load(path, weights_only=True)
    if not isinstance(data, dict) or data.get("format") != TENSORS_FORMAT:
        raise ValueError(f"'{path}' is not a ground-truth tensor file; delete it and rerun (it is remade).")
    return data


class BatchAugment:
    """Random shift by up to ``padding`` pixels (the random crop of a padded image) and horizontal flip,
    for a whole batch at once; the fill is the images' background (their per-channel minimum)."""

    def __init__(self, images: torch.Tensor, padding: int) -> None:
        self.padding = padding
        self.fill = images.amin(dim=(0, 2, 3)).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.padding
        flip = torch.rand(n, generator=gen) < 0.5
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        if p == 0:
            return x
        padded = self.fill.expand(n, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p:p + h, p:p + w] = x
        return window(padded, dy, dx, h, w)


class WeightEMA:
    """Exponential moving average of a model's parameters and float buffers (BatchNorm statistics), with
    the usual warm-up of the decay, ``min(decay, (1 + t) / (10 + t))``, so that a short run's average is
    not dominated by the initial weights (a fixed 0.99 still gives them 43 % weight after 85 steps)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        self.decay, self.updates = decay, 0
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        mine = list(self.module.parameters()) + [b for b in self.module.buffers() if b.is_floating_point()]
        theirs = list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]
        torch._foreach_lerp_(mine, theirs, 1 - d)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to the peak, then cosine to 0 at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, flip_tta: bool, batch: int = 1000) -> dict[str, float]:
    """Top-1 and NLL (mean negative log-likelihood of the true class) on ``x``; with ``flip_tta`` the
    class probabilities are averaged over the image and its mirror."""
    model.eval()
    correct, nll = 0, 0.0
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        prob = model(xb).softmax(1)
        if flip_tta:
            prob = (prob + model(xb.flip(3)).softmax(1)) / 2
        correct += int((prob.argmax(1) == yb).sum())
        nll -= float(prob.gather(1, yb.view(-1, 1)).clamp_min(1e-12).log().sum())
    return {"top1": correct / len(x), "nll": nll / len(x)}


def train_on_tensors(model: nn.Module, data: dict[str, torch.Tensor], recipe: Any, seed: int) -> dict[str, float]:
    """Train ``model`` (freshly initialised under ``seed``) with ``recipe``; test the EMA weights (or the
    weights, if ``ema_decay`` is 0) and, for comparison, the raw weights without test-time flip."""
    train_x, train_y = data["train_x"], data["train_y"]
    gen = torch.Generator().manual_seed(10_000 + seed)  # the data order: the seed's, for every architecture
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(recipe.subset_seed))
    if recipe.train_images > len(order):
        raise ValueError(f"recipe.train_images {recipe.train_images} exceeds the {len(order)} training images.")
    subset = order[: recipe.train_images]
    augment = BatchAugment(train_x, 2) if recipe.augment else None
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
                          weight_decay=recipe.weight_decay)
    steps_per_epoch = len(subset) // recipe.batch_size
    total = steps_per_epoch * recipe.epochs
    warmup = int(round(recipe.warmup_fraction * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, warmup))
    # Not channels_last: 17 % faster per step here, but torch 2.14.1's CPU backward corrupts the heap
    # ("double free or corruption") for the all-identity network in that layout (bench/results.md).
    ema = WeightEMA(model, recipe.ema_decay) if recipe.ema_decay > 0 else None
    model.train()
    for _ in range(recipe.epochs):
        perm = subset[torch.randperm(len(subset), generator=gen)]
        for i in range(steps_per_epoch):
            idx = perm[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            x = train_x[idx]
            if augment is not None:
                x = augment(x, gen)
            loss = F.cross_entropy(model(x), train_y[idx], label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
    plain = evaluate(model, data["test_x"], data["test_y"], flip_tta=False)
    final = evaluate(ema.module if ema is not None else model, data["test_x"], data["test_y"], recipe.flip_tta)
    return {"test_top1": final["top1"], "test_nll": final["nll"], "test_top1_plain": plain["top1"],
            "test_nll_plain": plain["nll"], "steps": total}
