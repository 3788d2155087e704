"""A real dataset's images decoded once into a uint8 tensor: what ``TensorLoader`` draws batches from.

The pixels are those the per-image torchvision path produces before its random crop, flip, scaling and
normalisation (``to_image``, the resize, the grey conversion: the same transform object is applied), so the
two paths give the same model inputs (the data modules check that on a few images).

* torchvision datasets that hold their split as one array (MNIST, Fashion-MNIST, CIFAR): the transform runs on
  the whole array at once, in seconds;
* an ``ImageFolder`` (any image files, JPEG included): each file decoded once and kept in a cache file keyed by
  the folder's file list, sizes and modification times (``folder_cache``), outside the data folder; a cache
  that no longer matches its folder is rebuilt, with one line saying why;
* anything else: one pass over the dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dfnas_pl.utils.io import atomic_torch_save

CACHE_FORMAT = "dfnas_pl.decoded-folder/1"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dfnas_pl`` (``~/.cache/dfnas_pl``): the user's cache, never the data folder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dfnas_pl"


def decode(dataset: Dataset, transform: Callable, cache_dir: Path | None = None,
           settings: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, C, H, W), labels long (N,))`` of every item of ``dataset``, through ``transform``
    (the per-image path's decoding part, ending in a uint8 image; ``dataset`` reads its items through it too).
    ``settings``: what besides the files decides
    the pixels (size, channels), part of an ImageFolder cache's key."""
    from torchvision import datasets

    if isinstance(dataset, datasets.ImageFolder):
        return folder_cache(dataset, settings or {}, cache_dir)
    whole = _whole_array(dataset, transform)
    return whole if whole is not None else _one_by_one(dataset, str(dataset))


def _whole_array(dataset: Any, transform: Callable) -> tuple[torch.Tensor, torch.Tensor] | None:
    """MNIST-like ``data`` (N, H, W) uint8 tensors and CIFAR-like (N, H, W, C) uint8 arrays, in chunks."""
    data, targets = getattr(dataset, "data", None), getattr(dataset, "targets", None)
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4:
        data = torch.from_numpy(data).permute(0, 3, 1, 2)
    elif isinstance(data, torch.Tensor) and data.dtype == torch.uint8 and data.dim() == 3:
        data = data.unsqueeze(1)
    else:
        return None
    if targets is None or len(targets) != len(data):
        return None
    from torchvision import tv_tensors

    chunks = [torch.as_tensor(transform(tv_tensors.Image(data[i:i + 4096]))) for i in range(0, len(data), 4096)]
    return torch.cat(chunks).contiguous(), torch.as_tensor(targets, dtype=torch.long).clone()


def _one_by_one(dataset: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item through the dataset's own reader and transform; names the file an error came from."""
    paths = [p for p, _ in dataset.samples] if hasattr(dataset, "samples") else None
    images, labels = [], []
    for i in range(len(dataset)):
        try:
            img, label = dataset[i]
        except (OSError, SyntaxError, ValueError) as err:  # PIL: OSError (truncated), UnidentifiedImageError
            name = paths[i] if paths else f"item {i} of {where}"
            raise ValueError(f"Image '{name}' cannot be read ({type(err).__name__}: {err}). Fix: replace or "
                             f"remove the file.") from None
        img = torch.as_tensor(img)
        if images and img.shape != images[0].shape:
            first = paths[0] if paths else "item 0"
            this = paths[i] if paths else f"item {i}"
            raise ValueError(f"The images of {where} differ in size ('{first}': {tuple(images[0].shape)}, '{this}': "
                             f"{tuple(img.shape)}). Fix: set data.init_args.image_size (every image is resized to it).")
        images.append(img)
        labels.append(int(label))
    return torch.stack(images).contiguous(), torch.as_tensor(labels, dtype=torch.long)


def _listing(dataset: Any) -> list[list]:
    root = Path(dataset.root)
    rows = []
    for path, _ in dataset.samples:
        st = os.stat(path)
        rows.append([Path(path).relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
    return rows


def _why_stale(old: list[list], new: list[list]) -> str:
    before, after = {r[0]: r[1:] for r in old}, {r[0]: r[1:] for r in new}
    added, removed = len(after.keys() - before.keys()), len(before.keys() - after.keys())
    changed = sum(before[k] != after[k] for k in before.keys() & after.keys())
    parts = [f"{n} file{'s' * (n != 1)} {what}" for n, what in ((added, "added"), (removed, "removed"),
                                                                 (changed, "changed")) if n]
    return ", ".join(parts) or "decoded with other settings"


def folder_cache(dataset: Any, settings: dict[str, Any], cache_dir: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """An ImageFolder's decoded images (through its own transform), from ``cache_dir``'s file for this folder and ``settings`` when it still
    matches the folder, else decoded (each file once) and saved there. ``cache_dir`` None: kept in memory only."""
    root = Path(dataset.root).resolve()
    listing = _listing(dataset)
    key = hashlib.sha256(json.dumps([settings, dataset.classes, listing]).encode()).hexdigest()
    cache = None
    if cache_dir is not None:
        name = hashlib.sha256(json.dumps([str(root), settings]).encode()).hexdigest()[:16]
        cache = Path(cache_dir).expanduser() / f"{root.parent.name}-{root.name}-{name}.pt"
        if cache.is_file():
            try:
                saved = torch.load(cache, weights_only=True)
                ok = isinstance(saved, dict) and saved.get("format") == CACHE_FORMAT
            except Exception:  # a truncated or foreign file: decoded again below
                saved, ok = None, False
            if ok and saved["key"] == key:
                return saved["images"], saved["labels"]
            why = _why_stale(saved["listing"], listing) if ok else "unreadable"
            print(f"dfnas_pl: the decoded-image cache '{cache}' no longer matches '{root}' ({why}): decoding the "
                  f"folder again.", flush=True)
    images, labels = _one_by_one(dataset, f"'{root}'")
    if cache is not None:
        try:
            atomic_torch_save(cache, {"format": CACHE_FORMAT, "key": key, "root": str(root), "settings": settings,
                                      "listing": listing, "images": images, "labels": labels})
        except OSError as err:
            print(f"dfnas_pl: cannot write the decoded-image cache '{cache}' ({err.strerror or err}): the images "
                  f"are kept in memory for this run only (set data.init_args.cache_dir to a writable folder).",
                  flush=True)
    return images, labels
