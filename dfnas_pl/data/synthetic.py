"""The synthetic set on disk: the contract between synthesis and every later stage.

Layout of ``<run>/synthetic/``::

    run.json                       settings that determine the images (checked on resume)
    images/<class>/<id>.png        ImageFolder layout; class = teacher argmax on the saved image,
                                   folders named by zero-padded class index so sorted order = index
    records/round_RR/batch_SSSSSS.pt   per finished batch: ids, slots, targets, teacher logits, metrics
    soft_labels.pt                 all rounds: ids, teacher logits, targets, classes (written at the end)
    manifest.json                  teacher, config, seed, rounds, counts, quality metrics (at the end)

An image id is ``r<round>_<slot>``: slot s of round r is optimised toward the teacher's soft
prediction on slot s of round r-1 (recursive label calibration), so ids never collide. Every file
is written atomically, and a batch's record is written after its images: a record is the proof
that a batch is complete, which is what lets a killed run resume without losing or duplicating work.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_png, encode_png
from torchvision.transforms import v2 as T

from dfnas_pl.data.quality import within_class_diversity
from dfnas_pl.utils.io import atomic_torch_save, atomic_write_bytes, atomic_write_json, check_writable_dir

MANIFEST_FORMAT = "dfnas_pl.synthetic/1"


# The files a synthesis writes under its set's folders (anything else there is the user's, never deleted).
OWN_FILES = re.compile(r"images/\d{3,}/r\d{2}_\d{6}\.png|records/round_\d{2}/batch_\d{6}\.pt|grids/round_\d{2}\.png"
                       r"|generator/rank_\d{2}\.pt")
SET_FOLDERS = ("images", "records", "grids", "generator")


def foreign_files(root: Path) -> list[str]:
    """Files under a set's folders that the synthesis did not write (a user's copy, a stray download),
    relative to ``root``; temporaries of interrupted writes are left to the lock's sweep."""
    found = []
    for name in SET_FOLDERS:
        for f in sorted((root / name).rglob("*")):
            rel = f.relative_to(root).as_posix()
            if f.is_file() and not OWN_FILES.fullmatch(rel) and not (f.name.startswith(".") and f.name.endswith(".tmp")):
                found.append(rel)
    return found


def _remove_own(root: Path) -> None:
    """Delete what a synthesis wrote under the set's folders, then the folders it leaves empty."""
    for name in SET_FOLDERS:
        for f in sorted((root / name).rglob("*"), reverse=True):
            if f.is_file() and OWN_FILES.fullmatch(f.relative_to(root).as_posix()):
                f.unlink()
            elif f.is_dir() and not any(f.iterdir()):
                f.rmdir()
        if (root / name).is_dir() and not any((root / name).iterdir()):
            (root / name).rmdir()


def image_id(round_: int, slot: int) -> str:
    return f"r{round_:02d}_{slot:06d}"


def class_folder(k: int, num_classes: int) -> str:
    return f"{k:0{max(3, len(str(num_classes - 1)))}d}"


class SyntheticSetWriter:
    """Writes finished batches, knows which are done, and consolidates the set at the end."""

    def __init__(self, root: str | Path, num_classes: int) -> None:
        self.root = Path(root)
        self.num_classes = num_classes
        self._logits_cache: dict[int, dict[int, torch.Tensor]] = {}

    # -- start / resume --------------------------------------------------------------------
    def begin(self, settings: dict[str, Any], overwrite: bool = False) -> str:
        """Check that an existing set was made with the same settings; returns 'new', 'resume' or 'complete'."""
        check_writable_dir(self.root, "synthetic-set output")
        run_file = self.root / "run.json"
        if run_file.exists():
            old = json.loads(run_file.read_text())
            changed = sorted(k for k in set(old) | set(settings) if _jsonable(old.get(k)) != _jsonable(settings.get(k)))
            if changed and not overwrite:
                raise ValueError(
                    f"'{self.root}' already holds a synthetic set made with other settings ({', '.join(changed)}). "
                    f"Run again with the same config to resume it, choose another output directory "
                    f"(model.init_args.output_dir), or set model.init_args.overwrite: true to discard it.")
            if changed:
                self.clear()
        if not (self.root / "run.json").exists():
            atomic_write_json(run_file, settings)
            return "new"
        return "complete" if (self.root / "manifest.json").exists() else "resume"

    def clear(self) -> None:
        """Discard the set: the files the synthesis wrote (a file of someone else's stays where it is)."""
        _remove_own(self.root)
        for name in ("run.json", "manifest.json", "soft_labels.pt"):
            (self.root / name).unlink(missing_ok=True)

    def remove_orphan_images(self) -> int:
        """Delete PNGs of batches that were killed before their record was written."""
        done = {rec_id for r in self.rounds_on_disk() for rec_id in self._ids_done(r)}
        removed = 0
        for png in (self.root / "images").glob("*/*.png"):
            if OWN_FILES.fullmatch(png.relative_to(self.root).as_posix()) and png.stem not in done:
                png.unlink()
                removed += 1
        return removed

    # -- per batch ---------------------------------------------------------------------------
    def record_path(self, round_: int, first_slot: int) -> Path:
        return self.root / "records" / f"round_{round_:02d}" / f"batch_{first_slot:06d}.pt"

    def records(self, round_: int) -> list[dict[str, Any]]:
        folder = self.root / "records" / f"round_{round_:02d}"
        return [torch.load(p, map_location="cpu", weights_only=True) for p in sorted(folder.glob("batch_*.pt"))]

    def rounds_on_disk(self) -> list[int]:
        return sorted(int(p.name.split("_")[1]) for p in (self.root / "records").glob("round_*"))

    def _ids_done(self, round_: int) -> set[str]:
        return {image_id(round_, int(s)) for rec in self.records(round_) for s in rec["slots"]}

    def done_slots(self, round_: int) -> set[int]:
        return {int(s) for rec in self.records(round_) for s in rec["slots"]}

    def write_batch(self, round_: int, slots: torch.Tensor, images: torch.Tensor, record: dict[str, Any]) -> None:
        """``images``: uint8 [N, C, H, W]; ``record`` must hold 'classes' (folder of each image). The record
        lists every file with its size and sha256, so a damaged set can be found and repaired."""
        files = {}
        for slot, img, k in zip(slots.tolist(), images, record["classes"].tolist()):
            rel = f"images/{class_folder(k, self.num_classes)}/{image_id(round_, slot)}.png"
            data = encode_png(img.cpu()).numpy().tobytes()
            atomic_write_bytes(self.root / rel, data)
            files[image_id(round_, slot)] = [rel, len(data), hashlib.sha256(data).hexdigest()]
        ids = [image_id(round_, s) for s in slots.tolist()]
        atomic_torch_save(self.record_path(round_, int(slots.min())),
                          {"round": round_, "slots": slots.cpu(), "ids": ids, "files": files, **record})

    def saved_images(self, rounds: Iterable[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The uint8 images and teacher logits of every finished batch of ``rounds``, in (round, slot) order:
        read from disk, so every process and every restart sees the same ones."""
        images, logits = [], []
        for round_ in rounds:
            for rec in self.records(round_):
                for i, image in enumerate(rec["ids"]):
                    data = (self.root / rec["files"][image][0]).read_bytes()
                    images.append(decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8)))
                    logits.append(rec["logits"][i])
        if not images:
            return torch.empty(0, dtype=torch.uint8), torch.empty(0)
        return torch.stack(images), torch.stack(logits)

    # -- verification and repair ----------------------------------------------------------------
    def verify(self, hashes: bool | int = True) -> tuple[list[str], list[Path]]:
        """Problems of the finished batches (each naming the file), and the records of the batches that
        must be redone. ``hashes``: True checks every image's sha256, an int a seeded sample of that many,
        False only existence and size."""
        problems, bad = [], []
        checked = []
        for path in sorted((self.root / "records").glob("round_*/batch_*.pt")):
            try:
                rec = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # truncated or foreign: the batch is redone
                problems.append(f"{path.relative_to(self.root)}: unreadable record ({type(err).__name__})")
                bad.append(path)
                continue
            files = rec.get("files") or {i: [f"images/{class_folder(int(k), self.num_classes)}/{i}.png", None, None]
                                         for i, k in zip(rec["ids"], rec["classes"].tolist())}
            broken = False
            for rel, size, digest in files.values():
                f = self.root / rel
                if not f.is_file():
                    problems.append(f"{rel}: missing")
                    broken = True
                elif size is not None and f.stat().st_size != size:
                    problems.append(f"{rel}: {f.stat().st_size} bytes, the record says {size} (truncated or replaced)")
                    broken = True
                elif digest is not None:
                    checked.append((rel, digest, path))
            if broken:
                bad.append(path)
        if hashes and checked:
            sample = checked if hashes is True else random.Random(0).sample(checked, min(int(hashes), len(checked)))
            for rel, digest, path in sample:
                if hashlib.sha256((self.root / rel).read_bytes()).hexdigest() != digest:
                    problems.append(f"{rel}: content differs from its record (sha256)")
                    if path not in bad:
                        bad.append(path)
        return problems, bad

    def repair(self) -> list[str]:
        """Drop every batch whose files are missing or corrupt (its record and images), so the resumed run
        makes it again; the set is no longer complete until it does. Returns the problems found."""
        problems, bad = self.verify(hashes=True)
        for path in bad:
            try:
                rec = torch.load(path, map_location="cpu", weights_only=True)
                for rel, _, _ in (rec.get("files") or {}).values():
                    (self.root / rel).unlink(missing_ok=True)
            except Exception:
                pass  # an unreadable record: its images are removed as orphans below
            path.unlink()
        if bad:
            for name in ("manifest.json", "soft_labels.pt"):
                (self.root / name).unlink(missing_ok=True)
            self._logits_cache.clear()
        return problems

    def logits_for(self, round_: int, slots: Iterable[int]) -> torch.Tensor:
        """Teacher logits on the saved images of ``round_`` for these slots (targets of the next round)."""
        slots = list(slots)
        cache = self._logits_cache.setdefault(round_, {})
        if any(s not in cache for s in slots):
            for rec in self.records(round_):
                for s, z in zip(rec["slots"].tolist(), rec["logits"]):
                    cache[s] = z
        missing = [s for s in slots if s not in cache]
        if missing:
            raise RuntimeError(f"Round {round_} has no images for slots {missing[:5]} in '{self.root}', so round "
                               f"{round_ + 1} has no soft labels for them. The set is incomplete: rerun the same "
                               f"command to finish round {round_} first.")
        return torch.stack([cache[s] for s in slots])

    # -- end -------------------------------------------------------------------------------------
    def finalize(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Gather all records into soft_labels.pt and write manifest.json (with counts and metrics)."""
        recs = [rec for r in self.rounds_on_disk() for rec in self.records(r)]
        if not recs:
            raise RuntimeError(f"No finished batches in '{self.root}': nothing to finalise.")
        ids = [i for rec in recs for i in rec["ids"]]
        if len(ids) != len(set(ids)):
            raise RuntimeError(f"Duplicate image ids in '{self.root}/records': the set is corrupt.")
        cat = lambda key: torch.cat([rec[key] for rec in recs])  # noqa: E731
        soft = {"ids": ids, "logits": cat("logits"), "targets": cat("targets"), "classes": cat("classes"),
                "target_classes": cat("target_classes"), "rounds": torch.tensor([rec["round"] for rec in recs
                                                                                 for _ in rec["ids"]])}
        atomic_torch_save(self.root / "soft_labels.pt", soft)
        rounds: dict[str, Any] = {}
        for r in sorted(set(soft["rounds"].tolist())):
            rr = [rec for rec in recs if rec["round"] == r]
            rounds[str(r)] = {"images": sum(len(rec["ids"]) for rec in rr),
                              **{key: batch_weighted_mean(rr, key)
                                 for key in ("teacher_top1", "teacher_confidence", "bn_distance", "final_loss")},
                              "diversity": within_class_diversity(torch.cat([rec["features"] for rec in rr]),
                                                                  torch.cat([rec["target_classes"] for rec in rr]))}
        counts = torch.bincount(soft["classes"], minlength=self.num_classes).tolist()
        manifest = {"format": MANIFEST_FORMAT, **manifest, "images": len(ids),
                    "image_root": "images", "soft_labels": "soft_labels.pt",
                    "counts_per_class": {class_folder(k, self.num_classes): c for k, c in enumerate(counts)},
                    "quality": {"teacher_top1": _mean_w(rounds, "teacher_top1"),
                                "teacher_confidence": _mean_w(rounds, "teacher_confidence"),
                                "bn_distance": _mean_w(rounds, "bn_distance"),
                                "diversity": _mean_w(rounds, "diversity"), "per_round": rounds}}
        if all("teacher_image_passes" in rec for rec in recs):  # (sets made before it was recorded: no cost)
            passes = sum(int(rec["teacher_image_passes"]) for rec in recs)
            manifest["cost"] = {"teacher_image_passes": passes, "per_image": passes / len(ids)}
        bad = sorted(k for k, v in manifest["quality"].items() if isinstance(v, float) and not math.isfinite(v))
        manifest["quality"]["non_finite"] = bad  # written as null (strict JSON); named here so nobody reads 0
        atomic_write_json(self.root / "manifest.json", manifest)
        return manifest


def batch_weighted_mean(records: list[dict[str, Any]], key: str) -> float:
    """Mean of a per-batch metric over a round, each batch weighted by its number of images."""
    n = sum(len(rec["ids"]) for rec in records)
    return sum(float(rec[key]) * len(rec["ids"]) for rec in records) / n


def _mean_w(rounds: dict[str, Any], key: str) -> float:
    total = sum(v["images"] for v in rounds.values())
    return sum(v[key] * v["images"] for v in rounds.values()) / total


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


REPAIR = ("Run the synthesis command that made '{root}' again: it finds and remakes damaged batches "
          "(`python -m dfnas_pl check {root}` lists every problem).")


def read_set(root: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest and soft labels of a finished set; a missing, invalid or unreadable one is an error
    that names the file and the fix."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"'{root}' is not a finished synthetic set (no manifest.json). Run the "
                                f"synthesis stage first (python -m dfnas_pl fit --config .../synthesize.yaml), or "
                                f"finish it by running its command again.")
    try:
        manifest = json.loads(manifest_path.read_text())
        soft = torch.load(root / manifest["soft_labels"], map_location="cpu", weights_only=True)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"'{manifest_path}' is not a valid manifest ({type(err).__name__}: {err}). "
                         f"{REPAIR.format(root=root)}") from None
    except Exception as err:  # a truncated soft_labels.pt fails inside the unpickler in many ways
        raise ValueError(f"'{root / 'soft_labels.pt'}' is unreadable ({type(err).__name__}). "
                         f"{REPAIR.format(root=root)}") from None
    return manifest, soft


def file_problems(root: Path, manifest: dict[str, Any], hashes: bool | int) -> list[str]:
    """Every problem of a set's image files: each batch's images against its record (existence, size,
    and the content hash of all (``True``) or a seeded sample of ``hashes`` of them), and an images/
    folder with no image at all."""
    problems, _ = SyntheticSetWriter(root, int(manifest["teacher"]["num_classes"])).verify(hashes=hashes)
    if not any((root / "images").glob("*/*.png")):  # also a missing images/ folder
        problems.insert(0, "images/: no images")
    return problems


def open_set(root: str | Path, sample_hashes: int = 16) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`read_set` after a fast check of the files (every image's existence and size, a seeded
    sample of content hashes). Any problem is a ValueError that names the file and the fix, never a
    decoder's traceback."""
    root = Path(root)
    manifest, soft = read_set(root)
    problems = file_problems(root, manifest, sample_hashes)
    if problems:
        listed = "; ".join(problems[:5]) + (f"; ... ({len(problems)} in all)" if len(problems) > 5 else "")
        raise ValueError(f"The synthetic set '{root}' is damaged: {listed}. {REPAIR.format(root=root)}")
    return manifest, soft


class SyntheticImageDataset(Dataset):
    """A finished synthetic set: (image, teacher logits, class) per item, images normalised with the
    teacher's input statistics from the manifest. ``rounds`` selects rounds (default: all).

    Images saved larger than the teacher's input (``regional_update: window`` canvases) are cut to the
    input size first: a ``random`` window (training: the canvas is the data, each epoch sees another
    window) or the ``centre`` one (evaluation; the window the stored soft labels were computed on)."""

    def __init__(self, root: str | Path, transform: Callable | None = None, rounds: Iterable[int] | None = None,
                 normalize: bool = True, window: Literal["centre", "random"] = "centre") -> None:
        self.root = Path(root)
        self.manifest, soft = open_set(self.root)
        keep = torch.ones(len(soft["ids"]), dtype=torch.bool)
        if rounds is not None:
            keep = torch.isin(soft["rounds"], torch.tensor(list(rounds)))
        idx = keep.nonzero().flatten()
        self.ids = [soft["ids"][i] for i in idx.tolist()]
        self.logits, self.classes = soft["logits"][idx], soft["classes"][idx]
        self.num_classes = int(self.manifest["teacher"]["num_classes"])
        self.paths = [self.root / self.manifest["image_root"] / class_folder(int(k), self.num_classes) / f"{i}.png"
                      for i, k in zip(self.ids, self.classes.tolist())]
        mean = torch.tensor(self.manifest["teacher"]["mean"]).view(-1, 1, 1)
        std = torch.tensor(self.manifest["teacher"]["std"]).view(-1, 1, 1)
        self.mean, self.std = mean, std
        self.transform, self.normalize = transform, normalize
        size = int(self.manifest["teacher"]["image_size"])
        self.canvas_size = int(self.manifest.get("canvas_size", size))
        if window not in ("centre", "random"):
            raise ValueError(f"window must be 'centre' or 'random', got {window!r}.")
        self.crop = None if self.canvas_size == size else (T.RandomCrop(size) if window == "random" else T.CenterCrop(size))
        mode = ImageReadMode.GRAY if len(mean) == 1 else ImageReadMode.RGB
        self._mode = mode

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, i: int) -> torch.Tensor:
        """Image ``i`` as stored: uint8, the canvas size."""
        try:
            data = torch.frombuffer(bytearray(self.paths[i].read_bytes()), dtype=torch.uint8)
            return decode_png(data, mode=self._mode)
        except (OSError, RuntimeError) as err:
            raise ValueError(f"Image '{self.paths[i]}' of the synthetic set is missing or corrupt "
                             f"({type(err).__name__}). {REPAIR.format(root=self.root)}") from None

    def input_settings(self) -> dict[str, Any]:
        """What ``TensorLoader`` needs to turn :meth:`decoded` into the teacher's input: the size to cut the canvas
        to, the per-channel normalisation."""
        return {"size": int(self.manifest["teacher"]["image_size"]), "mean": self.mean.flatten().tolist(),
                "std": self.std.flatten().tolist()}

    def decoded(self) -> torch.Tensor:
        """Every image as stored, ``(N, C, canvas, canvas)`` uint8: what ``TensorLoader`` draws from (the
        teacher's size is cut from it per batch, as ``__getitem__`` does per image)."""
        if len(self) == 0:
            return torch.zeros(0, len(self.mean), self.canvas_size, self.canvas_size, dtype=torch.uint8)
        return torch.stack([self.read(i) for i in range(len(self))])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        img = T.functional.to_dtype(self.read(i), torch.float32, scale=True)  # as the tensor loader scales
        if self.crop is not None:
            img = self.crop(img)
        if self.transform is not None:
            img = self.transform(img)
        if self.normalize:
            img = (img - self.mean) / self.std
        return img, self.logits[i], int(self.classes[i])
