"""Build and load teacher networks.

A teacher source is a string - the path (or ``embedded:<name>``) alone - or a mapping that adds what
the file does not say: ``{path, arch, num_classes, in_channels, image_size, mean, std, class_names,
trust_checkpoint}``. Every stage that takes a teacher takes both forms. The file may be:

* ``embedded:<name>`` - a teacher file shipped in ``dfnas_pl/teachers/weights/<name>.pt``;
* a **teacher file** (``.pt`` written by :func:`save_teacher`: architecture, input statistics and
  state dict together, so it needs no other argument);
* a **Lightning checkpoint** (``.ckpt``) of :class:`~dfnas_pl.teachers.module.TeacherClassifier`;
* a **plain state dict**, together with ``arch``;
* a **TorchScript** archive (``torch.jit.save``) or a **torch.export** program (``torch.export.save``);
  with ``arch`` its weights are loaded into that architecture (so its BatchNorm layers can be
  hooked for the feature-statistics loss), without ``arch`` the archive runs as it is (no BatchNorm
  hooks: synthesis then needs ``r_feature: 0``);
* a **whole pickled module** (``torch.save(model)``), only with ``trust_checkpoint: true``;
* no path, just ``arch`` - randomly initialised (weights cannot be downloaded here).

``arch`` is a model name of our registry (``resnet8``), ``torchvision:<name>``, ``timm:<name>``
(``pip install -e '.[timm]'``), the import path of any ``nn.Module`` class (``mypkg.models.MyNet``,
built without arguments) or ``{class_path, init_args}``. Input facts (channels, size, mean/std,
class names) come from the file where it has them, else from the source mapping; our registry
architectures fall back to Fashion-MNIST-like defaults, anything else gets a clear error naming
what is missing. Every file is read with ``torch.load(weights_only=True)``; ``trust_checkpoint``
opts out for files from a trusted source that hold arbitrary Python objects.
"""

from __future__ import annotations

import importlib
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfnas_pl.teachers.resnet import ARCHITECTURES
from dfnas_pl.utils.io import atomic_torch_save

WEIGHTS_DIR = Path(__file__).parent / "weights"
TEACHER_FILE_FORMAT = "dfnas_pl.teacher/1"
SOURCE_KEYS = ("path", "arch", "num_classes", "in_channels", "image_size", "mean", "std", "class_names",
               "trust_checkpoint")
# What a stage's ``teacher`` argument takes (see the module docstring). A plain ``dict``, not
# ``dict[str, Any]``: jsonargparse instantiates a ``{class_path, init_args}`` value typed ``Any`` into the
# module itself, and the loader must see the user's mapping ``arch: {class_path: ..., init_args: ...}``.
TeacherSource = str | dict


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
    kind: str = "module"  # "module" (hookable nn.Module) | "torchscript" | "export" (run as archived)

    def describe(self) -> dict[str, Any]:
        return {"arch": self.arch, "source": self.source, "num_classes": self.num_classes,
                "in_channels": self.in_channels, "image_size": self.image_size, "mean": list(self.mean),
                "std": list(self.std), "metrics": self.metrics, "kind": self.kind}


def is_registry_arch(arch: Any) -> bool:
    """Names whose input conventions we know (our registry, torchvision, timm)."""
    return isinstance(arch, str) and (arch in ARCHITECTURES or arch.startswith(("torchvision:", "timm:")))


def build_custom(arch: str | Mapping[str, Any]) -> nn.Module:
    """A user's ``nn.Module`` from an import path (built without arguments) or ``{class_path, init_args}``."""
    spec = {"class_path": arch} if isinstance(arch, str) else dict(arch)
    path = spec.get("class_path")
    if not isinstance(path, str) or "." not in path or set(spec) - {"class_path", "init_args"}:
        raise ValueError(f"Teacher arch {arch!r}: give a registry name, 'torchvision:<name>', 'timm:<name>', an import "
                         f"path such as 'mypkg.models.MyNet', or {{class_path: ..., init_args: {{...}}}}.")
    module_name, name = path.rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"Teacher arch '{path}' cannot be imported ({err}): is its package installed or on "
                         f"PYTHONPATH?") from err
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"Teacher arch '{path}' is not an nn.Module class.")
    try:
        return cls(**dict(spec.get("init_args") or {}))
    except TypeError as err:
        raise ValueError(f"Teacher arch '{path}' could not be built with init_args {spec.get('init_args') or {}} "
                         f"({err}): give them as {{class_path: {path}, init_args: {{...}}}}.") from err


def build_arch(arch: str | Mapping[str, Any], in_channels: int, num_classes: int) -> nn.Module:
    if not is_registry_arch(arch) and (isinstance(arch, Mapping) or "." in str(arch)):
        return build_custom(arch)
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
            raise ImportError(f"Teacher '{arch}' needs timm, an optional extra: pip install -e '.[timm]' "
                              f"(or pip install timm).") from err
        return timm.create_model(arch.split(":", 1)[1], pretrained=False, num_classes=num_classes,
                                 in_chans=in_channels)
    if arch not in ARCHITECTURES:
        raise ValueError(f"Unknown teacher architecture '{arch}'. Known: {sorted(ARCHITECTURES)}, "
                         f"'torchvision:<name>', 'timm:<name>', or the import path of an nn.Module class.")
    return ARCHITECTURES[arch](in_channels=in_channels, num_classes=num_classes)


def archive_kind(path: Path) -> str | None:
    """``torchscript`` or ``export`` for those zip archives, else None (torch.save files are zips too)."""
    if not zipfile.is_zipfile(path):
        return None
    names = zipfile.ZipFile(path).namelist()
    if any(n.endswith("/archive_format") for n in names) and any("/models/" in n for n in names):
        return "export"
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    return None


def _safe_load(path: Path, trust_checkpoint: bool) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"Teacher checkpoint '{path}' does not exist. Check the path in the config "
                                f"(model.teacher), or train one with experiments/fmnist/teacher.yaml.")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as err:
        raise ValueError(f"Teacher checkpoint '{path}' holds Python objects that weights_only loading refuses "
                         f"({err}). If you trust the file (e.g. a whole module saved with torch.save(model)), "
                         f"set trust_checkpoint: true.") from err
    except Exception as err:  # a truncated or foreign file fails in many ways inside the unpickler
        raise ValueError(f"Teacher checkpoint '{path}' is corrupt or not a PyTorch file ({err}). "
                         f"Re-export or re-download it.") from err


class ArchivedTeacher(nn.Module):
    """A TorchScript or torch.export teacher run as it was saved. It stays in inference mode whatever
    ``train()`` says (an exported program cannot switch modes, and a teacher must never use batch
    statistics), so stage modules can hold it like any submodule."""

    def __init__(self, archive: nn.Module, kind: str) -> None:
        super().__init__()
        self.archive, self.kind = archive, kind

    def train(self, mode: bool = True) -> ArchivedTeacher:
        self.training = False
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.archive(x)


def _load_archive(path: Path, kind: str) -> nn.Module:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.* deprecation notes
            if kind == "torchscript":
                module = torch.jit.load(str(path), map_location="cpu")
                module.eval()
                return module
            with open(path, "rb") as f:  # a file object: torch.export.load wants a .pt2 name otherwise
                return torch.export.load(f).module()
    except Exception as err:
        raise ValueError(f"Teacher {kind} archive '{path}' could not be loaded ({err}). Re-export it with this "
                         f"torch version ({torch.__version__}).") from err


def _source_fields(source: Any) -> dict[str, Any]:
    if source is None or isinstance(source, str):
        return {"path": source}
    if not isinstance(source, Mapping):
        raise ValueError(f"A teacher source is a path string or a mapping {{path, arch, ...}}, not {source!r}.")
    unknown = sorted(set(source) - set(SOURCE_KEYS))
    if unknown:
        raise ValueError(f"Unknown teacher setting(s) {unknown}; a teacher mapping takes {list(SOURCE_KEYS)}.")
    return dict(source)


def load_teacher(source: TeacherSource | None = "embedded:fmnist_resnet8", arch: str | Mapping | None = None,
                 num_classes: int | None = None, in_channels: int | None = None, image_size: int | None = None,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 trust_checkpoint: bool = False, class_names: list[str] | None = None) -> Teacher:
    """Load a teacher, frozen in eval mode. Explicit arguments (or the source mapping's) are checked
    against what the file says."""
    fields = _source_fields(source)
    given = {"arch": arch, "num_classes": num_classes, "in_channels": in_channels, "image_size": image_size,
             "mean": mean, "std": std, "class_names": class_names}
    for key, value in given.items():
        if value is None and fields.get(key) is not None:
            given[key] = fields[key]
    trust_checkpoint = bool(trust_checkpoint or fields.get("trust_checkpoint"))
    path_str = fields.get("path")
    meta: dict[str, Any] = {}
    state: dict[str, torch.Tensor] | None = None
    ready: nn.Module | None = None  # a module that comes whole (archive or pickled module)
    kind = "module"
    if path_str is None:
        if given["arch"] is None:
            raise ValueError("Give a teacher checkpoint path or an architecture name (arch).")
    else:
        path = WEIGHTS_DIR / f"{path_str.split(':', 1)[1]}.pt" if path_str.startswith("embedded:") else Path(path_str)
        archive = archive_kind(path) if path.is_file() else None
        obj = _load_archive(path, archive) if archive else _safe_load(path, trust_checkpoint)
        if archive:
            if given["arch"] is not None:  # its weights into a hookable module of the given architecture
                state = {k: v for k, v in obj.state_dict().items()}
            else:
                ready, kind = ArchivedTeacher(obj, archive), archive
        elif isinstance(obj, nn.Module):  # torch.save(model), trusted
            ready = obj
        elif isinstance(obj, dict) and obj.get("format") == TEACHER_FILE_FORMAT:
            meta, state = obj, obj["state_dict"]
        elif isinstance(obj, dict) and "state_dict" in obj and "hyper_parameters" in obj:  # Lightning checkpoint
            hp = obj["hyper_parameters"]
            meta = {"arch": hp.get("arch"), "num_classes": hp.get("num_classes"), "in_channels": hp.get("in_channels"),
                    "image_size": hp.get("image_size"), "mean": hp.get("mean"), "std": hp.get("std")}
            state = {k.removeprefix("model."): v for k, v in obj["state_dict"].items() if k.startswith("model.")}
        elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            state = obj
        else:
            raise ValueError(f"'{path}' is neither a dfnas_pl teacher file, a Lightning checkpoint, a state dict, a "
                             f"TorchScript / torch.export archive nor a pickled nn.Module.")

    def pick(name: str, default: Any = None) -> Any:
        stored, value = meta.get(name), given[name]
        if value is not None and stored is not None and _norm(value) != _norm(stored):
            raise ValueError(f"The config says teacher {name}={value}, but the checkpoint was made with "
                             f"{name}={stored}. Remove the setting or fix it to match the checkpoint.")
        value = value if value is not None else stored
        return default if value is None else value

    arch = pick("arch")
    if arch is None and ready is None:
        raise ValueError(f"The state dict '{path_str}' does not say its architecture: set the teacher's arch too "
                         f"(teacher: {{path: {path_str}, arch: <registry name or mypkg.models.MyNet>}}).")
    known = is_registry_arch(arch)
    if not known:  # a user's network: its input facts cannot be guessed
        missing = [k for k in ("in_channels", "image_size", "mean", "std") if pick(k) is None]
        if missing:
            raise ValueError(f"Teacher '{path_str or arch}' does not say its {', '.join(missing)}: add them to the teacher "
                             f"setting, e.g. teacher: {{path: {path_str}, in_channels: 3, image_size: 32, mean: [0.49, "
                             f"0.48, 0.45], std: [0.25, 0.24, 0.26]}}.")
    in_channels = pick("in_channels", 3 if str(arch).startswith(("torchvision", "timm")) else 1)
    image_size = pick("image_size", 28 if in_channels == 1 else 32)
    mean = tuple(pick("mean", (0.5,) * in_channels))
    std = tuple(pick("std", (0.5,) * in_channels))
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean {mean} / std {std} must have one value per input channel ({in_channels}).")
    if ready is not None or not known:
        model = ready if ready is not None else build_custom(arch)
        if state is not None:
            _load_state(model, state, path_str, arch, in_channels, "its own")
        model.eval()
        num_classes = pick("num_classes") or _infer_classes(model, in_channels, image_size, path_str or str(arch))
    else:
        num_classes = pick("num_classes", 10)
        model = build_arch(arch, in_channels, num_classes)
        if state is not None:
            _load_state(model, state, path_str, arch, in_channels, num_classes)
    model.eval()
    for param in model.parameters():  # (ScriptModules have no requires_grad_)
        param.requires_grad_(False)
    names = list(pick("class_names") or [])
    if names and len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} entries but the teacher has {num_classes} classes.")
    label = arch if isinstance(arch, str) else (dict(arch).get("class_path") if arch else type(model).__name__)
    return Teacher(model=model, arch=str(label), num_classes=int(num_classes), in_channels=in_channels,
                   image_size=image_size, mean=mean, std=std, source=str(path_str or label), class_names=names,
                   metrics=dict(meta.get("metrics") or {}), kind=kind)


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | None, arch: Any, in_channels: int,
                num_classes: Any) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"The weights in '{path}' do not fit architecture '{arch}' with {in_channels} input "
                         f"channels and {num_classes} classes: {str(err).splitlines()[0]}") from err


@torch.no_grad()
def _infer_classes(model: nn.Module, in_channels: int, image_size: int, what: str) -> int:
    """The number of classes of a network that does not say it: the width of its output on one image."""
    try:
        out = model(torch.zeros(1, in_channels, image_size, image_size))
    except Exception as err:
        hint = (" A torch.export program must be exported with a dynamic batch dimension (dynamic_shapes="
                "{'x': {0: torch.export.Dim('batch')}})." if getattr(model, "kind", None) == "export" else "")
        raise ValueError(f"Teacher '{what}' fails on a {in_channels}x{image_size}x{image_size} input ({err}): check "
                         f"in_channels and image_size in the teacher setting.{hint}") from err
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ValueError(f"Teacher '{what}' must return logits of shape [batch, classes], got "
                         f"{getattr(out, 'shape', type(out).__name__)}.")
    return int(out.shape[1])


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
