"""Does the real data a stage evaluates on speak the teacher's language?

A teacher's output ``k`` means its ``k``-th class; real labels come from the dataset's own class
order (an ImageFolder's sorted folder names). If the two orders differ, every accuracy on real data
is silently wrong, and nothing downstream would notice. So every stage that puts a teacher (or a
set synthesised from one, or an architecture sized for one) next to real data checks here, before
training: channels, class count, class names *in order*, and the normalisation (synthetic images and
the teacher's inputs are normalised with the teacher's mean/std; real images must be too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dfnas_pl.data.vision import VisionDataModule


def real_data_of(datamodule: Any) -> VisionDataModule | None:
    """The real-data part of a stage's data module: itself, ``real_data`` (search) or ``eval_data``."""
    if isinstance(datamodule, VisionDataModule):
        return datamodule
    for attr in ("real_data", "eval_data"):
        part = getattr(datamodule, attr, None)
        if isinstance(part, VisionDataModule):
            return part
    return None


def _describe(data: VisionDataModule) -> str:
    hp = data.hparams
    return f"{hp.dataset} at '{hp.root}'"


def check_real_data(data: VisionDataModule | None, facts: Mapping[str, Any], against: str,
                    class_names: Sequence[str] = (), normalisation: bool = True) -> None:
    """Raise a ``ValueError`` naming both sides when ``data`` cannot be used with ``facts``.

    Args:
        data: the real data (nothing to check when ``None``).
        facts: what the other side expects: ``num_classes``, ``in_channels`` and optionally
            ``image_size``, ``mean``, ``std`` (a teacher's ``describe()``, a manifest's ``teacher``,
            an architecture's ``space_config``).
        against: what ``facts`` describe, for the message ("the teacher 'x.pt'").
        class_names: the other side's class names in output order (empty: only the count is checked).
        normalisation: also compare mean/std (teachers and synthetic sets; not a label-trained model).
    """
    if data is None:
        return
    data.validate()
    where = _describe(data)
    channels = facts.get("in_channels")
    if channels is not None and int(channels) != data.in_channels:
        raise ValueError(f"The real data ({where}) has {data.in_channels} channel(s) but {against} expects "
                         f"{channels}. Fix: give the data module mean/std with {channels} value(s) (its channel "
                         f"count follows them), or use a teacher/architecture for {data.in_channels} channel(s).")
    names = data.class_names
    count = facts.get("num_classes")
    if names and class_names and list(names) != list(class_names):
        first = next((i for i, (a, b) in enumerate(zip(names, class_names)) if a != b), min(len(names),
                                                                                           len(class_names)))
        raise ValueError(
            f"The class names of the real data ({where}) and of {against} differ (first at position {first}), so "
            f"every label would be read as the wrong class.\n  the data: {list(names)}\n  {against}: "
            f"{list(class_names)}\nFix: name (and so order: ImageFolder sorts the folder names) the class "
            f"folders as the teacher's classes, or give the teacher's class_names in its source mapping "
            f"({{path, arch, class_names: [...]}}) in the data's order if that is what the teacher was trained on.")
    if names and count is not None and len(names) != int(count):
        raise ValueError(f"The real data ({where}) has {len(names)} classes {list(names)} but {against} has "
                         f"{count} outputs. Fix: point the data at the teacher's classes (one folder per class), "
                         f"or size the model for {len(names)} classes.")
    size = facts.get("image_size")
    if size is not None and data.image_size is not None and int(size) != int(data.image_size):
        raise ValueError(f"The real data ({where}) gives {data.image_size} px images but {against} takes "
                         f"{size} px. Fix: set the data module's image_size: {size}.")
    if normalisation and facts.get("mean") is not None and facts.get("std") is not None:
        mean, std = [float(v) for v in facts["mean"]], [float(v) for v in facts["std"]]
        if (len(mean) != len(data.mean) or any(abs(a - b) > 1e-3 for a, b in zip(mean, data.mean))
                or any(abs(a - b) > 1e-3 for a, b in zip(std, data.std))):
            raise ValueError(f"The real data ({where}) is normalised with mean {list(data.mean)}, std "
                             f"{list(data.std)}, but {against} expects mean {mean}, std {std}: its outputs on "
                             f"this data would mean nothing. Fix: set the data module's mean: {mean} and std: {std}.")
