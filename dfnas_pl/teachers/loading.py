"""Build and load teacher networks.

A teacher source is one of:

* ``embedded:<name>`` - a teacher file shipped in ``dfnas_pl/teachers/weights/<name>.pt``;
* a path to a **teacher file** (``.pt`` written by :func:`save_teacher`: architecture, input
  statistics and state dict together, so it needs no other argument);
* a path to a **Lightning checkpoint** (``.ckpt``) of :class:`~dfnas_pl.teachers.module.TeacherClassifier`;
* a path to a **plain state dict**, together with ``arch``;
* no path, just ``arch`` - a model name of our registry (``resnet8``), ``torchvision:<name>`` or
  ``timm:<name>`` - randomly initialised (weights cannot be downloaded here; pass them as a path).

Every file is read with ``torch.load(weights_only=True)``; ``trust_checkpoint=True`` opts out for
files from a trusted source that hold arbitrary Python objects.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfnas_pl.teachers.resnet import ARCHITECTURES
from dfnas_pl.utils.io import atomic_torch_save

WEIGHTS_DIR = Path(__file__).parent / "weights"
TEACHER_FILE_FORMAT = "dfnas_pl.teacher/1"


@dataclass
class Teacher:
    """A frozen classifier plus what synthesis needs to know about its inputs."""

    model: nn.Module
    arch: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    class_names: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"arch": self.arch, "source": self.source, "num_classes": self.num_classes,
                "in_channels": self.in_channels, "image_size": self.image_size, "mean": list(self.mean),
                "std": list(self.std), "metrics": self.metrics}


def build_arch(arch: str, in_channels: int, num_classes: int) -> nn.Module:
    if arch.startswith("torchvision:"):
        import torchvision

        name = arch.split(":", 1)[1]
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        if in_channels != 3:
            raise ValueError(f"torchvision model '{name}' expects 3 input channels, the config says {in_channels}.")
        return model
    if arch.startswith("timm:"):
        try:
            import timm
        except ImportError as err:
            raise ImportError(f"Teacher '{arch}' needs timm: pip install timm") from err
        return timm.create_model(arch.split(":", 1)[1], pretrained=False, num_classes=num_classes,
                                 in_chans=in_channels)
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown teacher architecture '{arch}'. Known: {sorted(ARCHITECTURES)}, "
                         f"'torchvision:<name>' or 'timm:<name>'.")
    return ARCHITECTURES[arch](in_channels=in_channels, num_classes=num_classes)


def _safe_load(path: Path, trust_checkpoint: bool) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"Teacher checkpoint '{path}' does not exist. Check the path in the config "
                                f"(model.teacher), or train one with experiments/fmnist/teacher.yaml.")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as err:
        raise ValueError(f"Teacher checkpoint '{path}' holds Python objects that weights_only loading refuses "
                         f"({err}). If you trust the file, set trust_checkpoint: true.") from err
    except Exception as err:  # a truncated or foreign file fails in many ways inside the unpickler
        raise ValueError(f"Teacher checkpoint '{path}' is corrupt or not a PyTorch file ({err}). "
                         f"Re-export or re-download it.") from err


def load_teacher(source: str | None = "embedded:fmnist_resnet8", arch: str | None = None,
                 num_classes: int | None = None, in_channels: int | None = None, image_size: int | None = None,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 trust_checkpoint: bool = False) -> Teacher:
    """Load a teacher, frozen in eval mode. Explicit arguments are checked against what the file says."""
    meta: dict[str, Any] = {}
    state: dict[str, torch.Tensor] | None = None
    if source is None:
        if arch is None:
            raise ValueError("Give a teacher checkpoint path or an architecture name (arch).")
    else:
        path = WEIGHTS_DIR / f"{source.split(':', 1)[1]}.pt" if source.startswith("embedded:") else Path(source)
        obj = _safe_load(path, trust_checkpoint)
        if isinstance(obj, dict) and obj.get("format") == TEACHER_FILE_FORMAT:
            meta, state = obj, obj["state_dict"]
        elif isinstance(obj, dict) and "state_dict" in obj and "hyper_parameters" in obj:  # Lightning checkpoint
            hp = obj["hyper_parameters"]
            meta = {"arch": hp.get("arch"), "num_classes": hp.get("num_classes"), "in_channels": hp.get("in_channels"),
                    "image_size": hp.get("image_size"), "mean": hp.get("mean"), "std": hp.get("std")}
            state = {k.removeprefix("model."): v for k, v in obj["state_dict"].items() if k.startswith("model.")}
        elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state = obj
        else:
            raise ValueError(f"'{path}' is neither a dfnas_pl teacher file, a Lightning checkpoint nor a state dict.")

    def pick(name: str, given: Any, default: Any = None) -> Any:
        stored = meta.get(name)
        if given is not None and stored is not None and _norm(given) != _norm(stored):
            raise ValueError(f"The config says teacher {name}={given}, but the checkpoint was made with "
                             f"{name}={stored}. Remove the setting or fix it to match the checkpoint.")
        value = given if given is not None else stored
        return default if value is None else value

    arch = pick("arch", arch)
    if arch is None:
        raise ValueError(f"The state dict '{source}' does not say its architecture: set the teacher arch too.")
    num_classes = pick("num_classes", num_classes, 10)
    in_channels = pick("in_channels", in_channels, 3 if str(arch).startswith(("torchvision", "timm")) else 1)
    image_size = pick("image_size", image_size, 28 if in_channels == 1 else 32)
    mean = tuple(pick("mean", mean, (0.5,) * in_channels))
    std = tuple(pick("std", std, (0.5,) * in_channels))
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean {mean} / std {std} must have one value per input channel ({in_channels}).")
    model = build_arch(arch, in_channels, num_classes)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"The weights in '{source}' do not fit architecture '{arch}' with {in_channels} input "
                             f"channels and {num_classes} classes: {str(err).splitlines()[0]}") from err
    model.eval().requires_grad_(False)
    return Teacher(model=model, arch=arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                   mean=mean, std=std, source=source or arch, class_names=list(meta.get("class_names") or []),
                   metrics=dict(meta.get("metrics") or {}))


def _norm(v: Any) -> Any:
    return [round(float(x), 6) for x in v] if isinstance(v, list | tuple) else v


def save_teacher(path: str | Path, model: nn.Module, arch: str, num_classes: int, in_channels: int, image_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], class_names: list[str] | None = None,
                 metrics: dict[str, float] | None = None) -> Path:
    """Write a self-describing teacher file (loadable with weights_only=True)."""
    return atomic_torch_save(path, {
        "format": TEACHER_FILE_FORMAT, "arch": arch, "num_classes": num_classes, "in_channels": in_channels,
        "image_size": image_size, "mean": list(mean), "std": list(std), "class_names": list(class_names or []),
        "metrics": dict(metrics or {}), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    })
