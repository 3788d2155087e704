"""Synthesis: model inversion of a frozen teacher, with recursive label calibration and regional update.

Mapping onto Lightning: the train dataloader yields batches of slot ids
(:class:`~dfnas_pl.data.synthesis_slots.SynthesisSlots`); one ``training_step`` runs the whole
inner optimisation of one batch of freshly initialised images with its own Adam (manual
optimisation: there are no weights to train); an epoch is one **round** of recursive label
calibration. Finished images and the teacher's logits on them are written by
:class:`~dfnas_pl.data.synthetic.SyntheticSetWriter`, which is also what makes a killed run
resumable: batches with a record on disk are skipped.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from dfnas_pl import __version__
from dfnas_pl.data.synthetic import SyntheticSetWriter, batch_weighted_mean, foreign_files
from dfnas_pl.inversion.competition import train_competition_student
from dfnas_pl.inversion.generator import ConditionalGenerator, MetaGenerator
from dfnas_pl.inversion.losses import (
    BNStatisticsLoss,
    competition,
    image_l2,
    same_class_similarity,
    soft_cross_entropy,
    total_variation,
)
from dfnas_pl.inversion.views import (
    all_windows,
    centre_window,
    jitter_flip,
    random_regions,
    random_windows,
    warmup_cosine,
)
from dfnas_pl.teachers.loading import TeacherSource, load_teacher
from dfnas_pl.utils.locking import HoldsOutputLock
from dfnas_pl.utils.settings import check_all

warnings.filterwarnings("ignore", message=r".*`configure_optimizers` returned `None`.*")
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")  # the frozen teacher

FULL_PRECISION = ("32-true", "32", "64-true", "64")  # trainer.precision values synthesis accepts
# Settings that change the images: a resumed run must use the same ones.
_IMAGE_SETTINGS = ("teacher", "rounds", "label_calibration", "label_temperature", "iterations", "lowres_iterations",
                   "lowres_factor", "lr", "betas", "warmup_iterations", "main_loss_multiplier", "r_feature",
                   "first_bn_multiplier", "tv_l1", "tv_l2", "l2_scale", "jitter", "flip_prob", "regional_update",
                   "region_scale", "region_ratio", "seed")
# Settings of regional_update: window only (kept out of older sets' run.json, which stay resumable).
_WINDOW_SETTINGS = ("canvas_ratio", "window_per_image", "window_labels")
# Diversity terms: recorded only when switched on, for the same reason.
_DIVERSITY_SETTINGS = {"r_diversity": (), "r_competition": ("competition_student", "competition_steps")}
# The generator synthesizer's settings: recorded only when it is the synthesizer.
_GENERATOR_SETTINGS = ("synthesizer", "generator_lr", "meta_lr", "z_dim", "generator_width")
SYNTHESIZERS = ("pixels", "generator")
REGIONAL_MODES = ("off", "zoom", "window")


class ModelInversion(HoldsOutputLock, L.LightningModule):
    """Synthesise a labelled image set from a teacher (DeepInversion + Data-Free NAS's calibration).

    Loss per step, on the view v the teacher sees (names of the official code):
    ``main_loss_multiplier * CE(f(v), target) + r_feature * R_BN + tv_l2 * R_TV2 + tv_l1 * R_TV1 + l2_scale * R_l2
    + r_diversity * R_div + r_competition * R_comp`` (the last two are off by default).

    Args:
        teacher: the teacher source: a path, ``embedded:<name>`` or a mapping ``{path, arch, in_channels, image_size, mean, std, class_names, trust_checkpoint}``: a teacher file, a Lightning checkpoint, a state dict with its arch (registry name, torchvision:/timm: name, or an nn.Module import path / class_path + init_args), a TorchScript or torch.export archive, or a pickled module (trusted only).
        output_dir: where the synthetic set is written (``<run>/synthetic``).
        rounds: rounds of recursive label calibration (= epochs); every round's images are kept.
        label_calibration: round r > 0 targets the teacher's soft prediction on round r-1's image of
            the same slot. Off: every round uses hard, class-balanced labels (plain DeepInversion). The
            paper: on; the default is off because it did not measurably help our distillation check
            (studies/synthesis_quality/README.md, 'Calibration x regional update').
        label_temperature: temperature of the soft targets of calibrated rounds (official: 1).
        iterations: Adam steps per batch at full resolution.
        lowres_iterations: optional warm-up steps on an average-pooled canvas (official: 2000 at half
            resolution); a new Adam starts at each phase.
        lowres_factor: down-sampling factor of the warm-up canvas.
        lr: Adam learning rate on the images (official: 0.25).
        betas: Adam betas (official: 0.5, 0.9).
        warmup_iterations: linear lr warm-up steps before the cosine decay, per phase.
        main_loss_multiplier: weight of the cross-entropy to the targets.
        r_feature: weight of the BatchNorm-statistics loss (feature-level regularisation); 0 switches it off.
            Official: 0.01; the default is 0.1, ten times that, because it measured better on the
            distillation check (+4.6 [+2.3, +6.9] points over 8 seeds on Fashion-MNIST, studies/synthesis_quality/README.md,
            'The BatchNorm-statistics loss'). The CIFAR / ImageNet paper configs keep 0.01 (not measured there).
        first_bn_multiplier: extra factor on the first BatchNorm layer's statistics term (official: 10).
        tv_l1: weight of the L1 total-variation prior.
        tv_l2: weight of the L2 total-variation prior.
        l2_scale: weight of the image L2 prior.
        jitter: random shift in pixels of the whole batch (used when regional_update is off).
        flip_prob: probability of a horizontal flip of each view.
        regional_update: which part of each image a step optimises (the paper's diversity device).
            ``zoom`` (or true): one random box per image (area in ``region_scale``), resampled to the
            input size. ``window``: as the official code, a canvas larger than the input
            (``canvas_ratio``), one input-sized window at a random offset per step, no interpolation;
            the whole canvas is saved and later stages crop input-sized windows from it. ``off`` (or
            false, the default, by the same measurement): the whole image every step, with ``jitter``.
        region_scale: area fraction range of the ``zoom`` regions.
        region_ratio: aspect-ratio range of the ``zoom`` regions.
        canvas_ratio: ``window`` only: canvas side / input side (official: 256 / 224; 32 px for 28).
        window_per_image: ``window`` only: each image gets its own offset and flip per step (false: one
            offset and flip for the whole batch, as the official code's batch-wide crop).
        window_labels: ``window`` only: the stored soft labels (and the next round's targets) are the
            teacher's prediction on the ``centre`` window, or the ``mean`` of its softmax over every window.
        r_diversity: weight of a diversity term: the mean cosine similarity of the teacher's penultimate
            features between the batch's images of the same target class, pushed down (a per-batch form of
            CMI's feature-distance diversity). 0 switches it off (the default).
        r_competition: weight of Adaptive DeepInversion's competition term, 1 - JS(student, teacher): from
            round 1 on, images are drawn toward where a student distilled on the earlier rounds' images
            disagrees with the teacher. 0 switches it off (the default); it needs rounds >= 2.
        competition_student: the competition student's architecture (a registry name, as the distillation
            check's student).
        competition_steps: KD steps (batch 64) that train the competition student at the start of each round.
        synthesizer: ``pixels`` (the default): each batch's pixels are optimised from noise for
            ``iterations`` steps. ``generator``: amortised, as Fast-Datafree: a copy of a meta-learned
            conditional generator and the batch's codes are optimised for ``iterations`` steps (tens, not
            hundreds), then the meta generator moves toward the copy (:mod:`dfnas_pl.inversion.generator`).
            Same losses, same set format; ``lr`` is then the codes' learning rate.
        generator_lr: ``generator``: Adam learning rate of the generator copy's weights.
        meta_lr: ``generator``: Reptile step of the meta generator toward each batch's copy (0: never learns,
            1: each batch starts from the last batch's copy).
        z_dim: ``generator``: size of the latent code.
        generator_width: ``generator``: channels of the generator's last hidden layer.
        seed: images and views of slot batch b of round r depend only on (seed, r, b) (``pixels``; the
            generator also carries its meta-learning from batch to batch within a process).
        quality_gate: after each round, stop with an error naming the round, its numbers and the likely
            cause if the teacher's top-1 on the saved images (against the round's targets) is below
            ``min_teacher_top1`` or any quality number is non-finite; false keeps such sets on purpose.
        min_teacher_top1: the gate's floor (a converged inversion is recognised by its teacher).
        overwrite: discard an existing set made with other settings instead of refusing to touch it.
        trust_checkpoint: load the teacher with ``weights_only=False`` (trusted files only).
    """

    def __init__(
        self,
        teacher: TeacherSource = "embedded:fmnist_resnet8",
        output_dir: str = "runs/fmnist/synthetic",
        rounds: int = 2,
        label_calibration: bool = False,
        label_temperature: float = 1.0,
        iterations: int = 200,
        lowres_iterations: int = 0,
        lowres_factor: int = 2,
        lr: float = 0.25,
        betas: Sequence[float] = (0.5, 0.9),
        warmup_iterations: int = 20,
        main_loss_multiplier: float = 1.0,
        r_feature: float = 0.1,
        first_bn_multiplier: float = 10.0,
        tv_l1: float = 0.0,
        tv_l2: float = 1e-4,
        l2_scale: float = 1e-5,
        jitter: int = 2,
        flip_prob: float = 0.5,
        regional_update: bool | Literal["off", "zoom", "window"] = False,
        region_scale: Sequence[float] = (0.64, 1.0),
        region_ratio: Sequence[float] = (0.75, 1.3333),
        canvas_ratio: float = 256 / 224,
        window_per_image: bool = True,
        window_labels: Literal["centre", "mean"] = "centre",
        r_diversity: float = 0.0,
        r_competition: float = 0.0,
        competition_student: str = "resnet8",
        competition_steps: int = 200,
        synthesizer: Literal["pixels", "generator"] = "pixels",
        generator_lr: float = 5e-3,
        meta_lr: float = 0.5,
        z_dim: int = 64,
        generator_width: int = 64,
        seed: int = 0,
        quality_gate: bool = True,
        min_teacher_top1: float = 0.9,
        overwrite: bool = False,
        trust_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        check_all([("rounds", rounds, 1, None), ("iterations", iterations, 1, None),
                   ("lowres_iterations", lowres_iterations, 0, None), ("lowres_factor", lowres_factor, 1, None),
                   ("label_temperature", label_temperature, 0, None, True), ("lr", lr, 0, None, True),
                   ("warmup_iterations", warmup_iterations, 0, None), ("main_loss_multiplier", main_loss_multiplier, 0, None),
                   ("r_feature", r_feature, 0, None), ("first_bn_multiplier", first_bn_multiplier, 0, None),
                   ("tv_l1", tv_l1, 0, None), ("tv_l2", tv_l2, 0, None), ("l2_scale", l2_scale, 0, None),
                   ("jitter", jitter, 0, None), ("flip_prob", flip_prob, 0, 1),
                   ("min_teacher_top1", min_teacher_top1, 0, 1), ("canvas_ratio", canvas_ratio, 1, 4),
                   ("r_diversity", r_diversity, 0, None), ("r_competition", r_competition, 0, None),
                   ("competition_steps", competition_steps, 1, None), ("generator_lr", generator_lr, 0, None, True),
                   ("meta_lr", meta_lr, 0, 1), ("z_dim", z_dim, 1, None), ("generator_width", generator_width, 1, None),
                   *[(f"betas[{i}]", b, 0, 1, False, True) for i, b in enumerate(betas)],
                   *[(f"region_scale[{i}]", v, 0, 1, True) for i, v in enumerate(region_scale)],
                   *[(f"region_ratio[{i}]", v, 0, None, True) for i, v in enumerate(region_ratio)]])
        if len(region_scale) != 2 or region_scale[0] > region_scale[1]:
            raise ValueError(f"model.init_args.region_scale must be [low, high] with low <= high, got {list(region_scale)}.")
        if regional_update not in (True, False, *REGIONAL_MODES):
            raise ValueError(f"regional_update must be one of {REGIONAL_MODES} (or true/false), got {regional_update!r}.")
        if window_labels not in ("centre", "mean"):
            raise ValueError(f"window_labels must be 'centre' or 'mean', got {window_labels!r}.")
        self.spec = load_teacher(teacher, trust_checkpoint=trust_checkpoint)
        self.teacher: nn.Module = self.spec.model
        n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.teacher.modules())
        if n_bn == 0 and r_feature > 0 and self.spec.kind != "module":
            raise ValueError(f"Teacher '{self.spec.source}' is a {self.spec.kind} archive run as it is: its BatchNorm "
                             f"layers cannot be hooked for the feature-statistics loss. Give its architecture too "
                             f"(teacher: {{path: {self.spec.source}, arch: mypkg.models.MyNet}}: its weights are loaded "
                             f"into that module), or switch the loss off with r_feature: 0.")
        if n_bn == 0 and r_feature > 0:
            raise ValueError(f"Teacher '{self.spec.source}' has no BatchNorm layers, so there are no feature statistics "
                             f"to match. Use a teacher with BatchNorm, or switch the loss off with r_feature: 0.")
        if r_diversity > 0 and self.teacher_last_linear() is None:
            raise ValueError(f"r_diversity needs the teacher's penultimate features, read at the input of its last "
                             f"nn.Linear, and teacher '{self.spec.source}' ({self.spec.kind}) shows none. Give its "
                             f"architecture as an nn.Module, or set r_diversity: 0.")
        if r_competition > 0 and rounds < 2:
            raise ValueError(f"r_competition {r_competition} with rounds {rounds}: the competition student learns from "
                             f"the earlier rounds' images, so round 0 has none. Set rounds >= 2, or r_competition: 0.")
        if synthesizer not in SYNTHESIZERS:
            raise ValueError(f"synthesizer must be one of {SYNTHESIZERS}, got {synthesizer!r}.")
        if synthesizer == "generator" and (lowres_iterations > 0 or self.regional_mode == "window"):
            raise ValueError("synthesizer: generator makes input-sized images directly: set lowres_iterations: 0 and "
                             "regional_update to off or zoom (the window mode optimises a larger canvas).")
        self.writer = SyntheticSetWriter(output_dir, self.spec.num_classes)
        self._features: torch.Tensor | None = None
        self._meta: MetaGenerator | None = None  # the generator synthesizer's meta generator (this process's)
        self._student: nn.Module | None = None  # the competition student of the current round
        self._feature_hook = None
        self._done: set[int] = set()
        self._started = time.time()

    # -- Lightning plumbing -------------------------------------------------------------------
    def train(self, mode: bool = True) -> ModelInversion:
        """The teacher stays in eval mode: train-mode BN would use batch statistics and move its running ones."""
        super().train(mode)
        self.teacher.eval()
        return self

    def configure_optimizers(self) -> None:
        return None  # each batch of images gets its own Adam inside training_step

    def configure_callbacks(self) -> list:
        """Lightning's default bar counts batches, and a batch is hundreds of Adam steps: swap it for one
        that counts the steps (a bar the user configured, or none, is left as it is)."""
        from lightning.pytorch.callbacks import TQDMProgressBar

        from callbacks.synthesis_progress import SynthesisProgressBar

        bar = self.trainer.progress_bar_callback
        return [SynthesisProgressBar(refresh_rate=bar.refresh_rate)] if type(bar) is TQDMProgressBar else []

    @property
    def output_dir(self) -> Path:
        return self.writer.root

    @property
    def regional_mode(self) -> str:
        """``off``, ``zoom`` or ``window`` (true / false are the older spellings of zoom / off)."""
        mode = self.hparams.regional_update
        return {True: "zoom", False: "off"}.get(mode, mode) if isinstance(mode, bool) else mode

    @property
    def canvas_size(self) -> int:
        """Side of the optimised (and saved) image: the input size, or larger with ``window``."""
        s = self.spec.image_size
        return max(s, round(s * self.hparams.canvas_ratio)) if self.regional_mode == "window" else s

    def settings(self) -> dict[str, Any]:
        out = {k: self.hparams[k] for k in _IMAGE_SETTINGS}
        out["regional_update"] = {"zoom": True, "off": False}.get(self.regional_mode, self.regional_mode)
        if self.regional_mode == "window":
            out.update({k: self.hparams[k] for k in _WINDOW_SETTINGS})
        for weight, companions in _DIVERSITY_SETTINGS.items():
            if self.hparams[weight] > 0:
                out.update({k: self.hparams[k] for k in (weight, *companions)})
        if self.hparams.synthesizer != "pixels":
            out.update({k: self.hparams[k] for k in _GENERATOR_SETTINGS})
        return out

    def wandb_artifacts(self) -> list[tuple[str, str, Path]]:
        """For :class:`callbacks.WandbArtifacts`: the set's manifest (counts, quality, settings)."""
        return [("synthetic-set", "dataset", self.output_dir / "manifest.json")]

    def setup(self, stage: str) -> None:
        precision = str(self.trainer.precision)
        if precision not in FULL_PRECISION:
            raise ValueError(f"Synthesis runs in full precision, not trainer.precision={precision!r}: the "
                             f"BN-statistics loss compares feature means and variances to the teacher's running "
                             f"statistics, and bf16/fp16 (8/11-bit mantissa) blur the small differences it "
                             f"optimises. Set --trainer.precision 32-true (experiments/cluster/gpu_synthesis.yaml).")
        dm = self.trainer.datamodule
        if dm is not None and getattr(dm, "num_classes", self.spec.num_classes) != self.spec.num_classes:
            raise ValueError(f"data.num_classes is {dm.num_classes} but the teacher '{self.spec.source}' has "
                             f"{self.spec.num_classes} classes: set data.init_args.num_classes: {self.spec.num_classes}.")
        if self.trainer.is_global_zero:  # one writer per set (other ranks follow rank 0 through the barrier)
            self.take_output_lock(self.output_dir, "synthetic-set output")
            try:
                state = self.writer.begin(self.settings(), overwrite=self.hparams.overwrite)
            except BaseException:
                self.teardown(stage)  # a refused run leaves the set to whoever comes next
                raise
            problems = self.writer.repair() if state != "new" else []
            removed = self.writer.remove_orphan_images() if state != "new" else 0
            if problems:
                print(f"Repairing the synthetic set in '{self.output_dir}': {len(problems)} problem(s), their batches "
                      f"are made again: " + "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else ""))
                state = "resume"
            foreign = foreign_files(self.output_dir) if state != "new" else []
            if foreign:
                print(f"Left in place in '{self.output_dir}': {len(foreign)} file(s) that are not part of the set "
                      f"(never read, never deleted): " + ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else ""))
            if state != "new":
                stale = self._lock.stale_temporaries
                print(f"Resuming the synthetic set in '{self.output_dir}' ({state}; removed {removed} images of "
                      f"unfinished batches" + (f" and {stale} temporary files of interrupted writes" if stale else "")
                      + ").")
        self.trainer.strategy.barrier("synthesis-setup")
        self.trainer.fit_loop.max_epochs = self.hparams.rounds  # one epoch per calibration round
        self.hook_features()

    def hook_features(self) -> None:
        """Keep the input of the teacher's last Linear (its penultimate features) of every forward in
        ``_features``: the set's diversity metric and the diversity term read it. Hooked once, in the
        process that runs the synthesis (a hook is not picklable for spawned DDP workers)."""
        last = self.teacher_last_linear()
        if last is not None and self._feature_hook is None:
            self._feature_hook = last.register_forward_hook(lambda m, inp, out: setattr(self, "_features", inp[0]))

    def teacher_last_linear(self) -> nn.Linear | None:
        linears = [m for m in self.teacher.modules() if isinstance(m, nn.Linear)]
        return linears[-1] if linears else None

    def on_train_epoch_start(self) -> None:
        self._done = self.writer.done_slots(self.current_epoch)
        self._student = None
        slots = getattr(self.trainer.datamodule, "num_slots", None)
        finished = slots is not None and len(self._done) >= slots  # a resumed run passes its finished rounds
        if self.hparams.r_competition > 0 and self.current_epoch > 0 and not finished:
            images, _ = self.writer.saved_images(range(self.current_epoch))
            if len(images) == 0:
                raise RuntimeError(f"Round {self.current_epoch} of '{self.output_dir}' has no earlier images to train "
                                   f"the competition student on: rerun the same command to finish the earlier rounds.")
            self._student = train_competition_student(
                self.teacher, self.normalize(images.to(self.device)), self.hparams.competition_student,
                self.spec.in_channels, self.spec.num_classes, self.hparams.competition_steps,
                _seed(self.hparams.seed, self.current_epoch, -1))

    def on_train_epoch_end(self) -> None:
        """The quality gate, on the round's saved images (every rank reads the same records)."""
        self.trainer.strategy.barrier("synthesis-round-end")
        if not self.hparams.quality_gate:
            return
        recs = self.writer.records(self.current_epoch)
        if not recs:
            return
        numbers = {key: batch_weighted_mean(recs, key)
                   for key in ("teacher_top1", "teacher_confidence", "bn_distance", "final_loss")}
        bad = sorted(k for k, v in numbers.items() if not math.isfinite(v))
        floor = self.hparams.min_teacher_top1
        if bad or numbers["teacher_top1"] < floor:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in numbers.items())
            cause = (f"non-finite {', '.join(bad)}" if bad else
                     f"the teacher recognises only {numbers['teacher_top1']:.1%} of the round's images as their "
                     f"targets (floor {floor:.0%})")
            self.teardown("fit")  # free the set for the fixed rerun
            raise RuntimeError(
                f"Quality gate: round {self.current_epoch} of '{self.output_dir}' failed: {cause} ({shown}). Likely "
                f"causes: model.init_args.lr {self.hparams.lr:g} too high (diverging images), too few iterations "
                f"({self.hparams.iterations}), or loss weights that drown the cross-entropy (r_feature "
                f"{self.hparams.r_feature}, tv_l2 {self.hparams.tv_l2}, l2_scale {self.hparams.l2_scale}). The finished "
                f"batches are kept; fix the setting and use a new output_dir (or overwrite: true), or set "
                f"model.init_args.quality_gate: false to keep such a set on purpose.")

    # -- one batch = one full inner optimisation ------------------------------------------------
    def training_step(self, slots: torch.Tensor, batch_idx: int) -> dict[str, Any] | None:
        try:
            return self._synthesize_batch(slots)
        except BaseException:  # Lightning calls no module hook on a failed step: free the set's lock here
            self.teardown("fit")
            raise

    def _synthesize_batch(self, slots: torch.Tensor) -> dict[str, Any] | None:
        round_ = self.current_epoch
        slots = slots[slots >= 0].cpu()
        slots = slots[torch.tensor([int(s) not in self._done for s in slots], dtype=torch.bool)]
        if len(slots) == 0:
            return None  # padding, or finished before a restart
        targets = self.round_targets(round_, slots).to(self.device)
        gen = torch.Generator().manual_seed(_seed(self.hparams.seed, round_, int(slots.min())))
        x, final_loss = self.synthesize(targets, gen)
        images = self.to_uint8(x)
        record = self.evaluate_saved(images, targets)
        record["final_loss"] = final_loss
        record["rank"] = self.global_rank
        record["teacher_image_passes"] = len(slots) * self.steps_per_batch()  # forward + backward, per image
        self.writer.write_batch(round_, slots, images.cpu(), record)
        if self._meta is not None:
            self._meta.save()  # after the batch's files: a kill in between loses one Reptile step, no image
        n = len(slots)
        for key in ("teacher_top1", "teacher_confidence", "bn_distance", "final_loss"):
            self.log(f"synthesis/{key}", record[key], on_step=True, on_epoch=True, batch_size=n,
                     prog_bar=key in ("teacher_top1", "final_loss"))
        self.log("synthesis/round", float(round_), on_step=True, on_epoch=False, batch_size=n)
        return {"images": images.cpu(), "classes": record["classes"], "target_classes": record["target_classes"],
                "round": round_}

    def round_targets(self, round_: int, slots: torch.Tensor) -> torch.Tensor:
        """Round 0 (or no calibration): one-hot of slot % K. Later: softmax of last round's logits / T."""
        k = self.spec.num_classes
        if round_ == 0 or not self.hparams.label_calibration:
            return F.one_hot(slots % k, k).float()
        logits = self.writer.logits_for(round_ - 1, slots.tolist())
        return F.softmax(logits / self.hparams.label_temperature, dim=1)

    def mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's input normalisation as [1, C, 1, 1] tensors."""
        return (torch.tensor(self.spec.mean, device=device).view(1, -1, 1, 1),
                torch.tensor(self.spec.std, device=device).view(1, -1, 1, 1))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] as the teacher's input."""
        mean, std = self.mean_std(x.device)
        return (x - mean) / std

    def pixel_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self.mean_std(self.device)
        return (0 - mean) / std, (1 - mean) / std

    def loss(self, view: torch.Tensor, targets: torch.Tensor, bn: BNStatisticsLoss) -> tuple[torch.Tensor, dict]:
        """The inversion loss on one view (both synthesizers): the weighted sum of the enabled terms."""
        hp = self.hparams
        logits = self.teacher(view)
        terms = {"main": soft_cross_entropy(logits, targets),
                 "bn": bn.loss() if hp.r_feature > 0 else logits.new_zeros(())}
        terms["tv_l1"], terms["tv_l2"] = total_variation(view)
        terms["l2"] = image_l2(view)
        loss = (hp.main_loss_multiplier * terms["main"] + hp.r_feature * terms["bn"]
                + hp.tv_l2 * terms["tv_l2"] + hp.tv_l1 * terms["tv_l1"] + hp.l2_scale * terms["l2"])
        if hp.r_diversity > 0:  # features: the teacher's last Linear's input (hook_features)
            terms["diversity"] = same_class_similarity(self._features, targets.argmax(1))
            loss = loss + hp.r_diversity * terms["diversity"]
        if hp.r_competition > 0 and self._student is not None:
            terms["competition"] = competition(self._student(view), logits)
            loss = loss + hp.r_competition * terms["competition"]
        return loss, terms

    def check_finite(self, loss: torch.Tensor, terms: dict, step: int, first_step: bool, lr_name: str) -> None:
        if torch.isfinite(loss):
            return
        bad = [k for k, v in terms.items() if not torch.isfinite(v)]
        fix = ("The teacher gives non-finite outputs on fresh noise: check its weights." if first_step else
               f"Lower model.init_args.{lr_name} (now {self.hparams[lr_name]}) or the weight of the diverging term.")
        raise FloatingPointError(f"Synthesis loss became {loss.item()} at step {step} (non-finite terms: "
                                 f"{bad or 'none'}). {fix}")

    def progress_tick(self):
        bar = getattr(getattr(self, "_trainer", None), "progress_bar_callback", None)
        return getattr(bar, "optimisation_step", None)  # callbacks.SynthesisProgressBar counts Adam steps

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def synthesize(self, targets: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, float]:
        """Fresh images for ``targets`` (normalised space) and the last loss, by the configured synthesizer.

        Always fp32: the BN-statistics and TV terms are small differences of large numbers, and bf16
        rounding would stall the optimisation."""
        self.hook_features()
        if self.hparams.synthesizer == "generator":
            return self.synthesize_with_generator(targets, gen)
        return self.synthesize_pixels(targets, gen)

    def synthesize_pixels(self, targets: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, float]:
        """Per-image inversion: the pixels themselves are optimised, from noise."""
        hp = self.hparams
        n, c, s = len(targets), self.spec.in_channels, self.canvas_size
        x = torch.randn(n, c, s, s, generator=gen).to(self.device).requires_grad_(True)
        lo, hi = self.pixel_bounds()
        phases = [(hp.lowres_factor, hp.lowres_iterations), (1, hp.iterations)]
        tick = self.progress_tick()
        loss_value, first_step = float("nan"), True
        with BNStatisticsLoss(self.teacher, hp.first_bn_multiplier) as bn:
            for factor, steps in [(f, k) for f, k in phases if k > 0]:
                opt = torch.optim.Adam([x], lr=hp.lr, betas=tuple(hp.betas), eps=1e-8)
                for t in range(steps):
                    for group in opt.param_groups:
                        group["lr"] = warmup_cosine(t, steps, hp.lr, hp.warmup_iterations)
                    view = self.view(F.avg_pool2d(x, factor) if factor > 1 else x, factor, gen)
                    loss, terms = self.loss(view, targets, bn)
                    self.check_finite(loss, terms, t, first_step, "lr")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    with torch.no_grad():
                        x.copy_(torch.maximum(torch.minimum(x, hi), lo))
                    loss_value, first_step = loss.item(), False
                    if tick is not None:
                        tick()
        return x.detach(), loss_value

    def synthesize_with_generator(self, targets: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, float]:
        """Amortised inversion (:mod:`dfnas_pl.inversion.generator`): a copy of the meta generator and the
        batch's codes are optimised for ``iterations`` steps; the meta generator then moves toward the copy."""
        hp = self.hparams
        meta = self.meta_generator()
        fast = meta.fast_copy()
        z = torch.randn(len(targets), hp.z_dim, generator=gen).to(self.device).requires_grad_(True)
        opt = torch.optim.Adam([{"params": fast.parameters(), "lr": hp.generator_lr}, {"params": [z], "lr": hp.lr}],
                               betas=tuple(hp.betas))
        base_lrs = [g["lr"] for g in opt.param_groups]
        tick = self.progress_tick()
        loss_value = float("nan")
        with BNStatisticsLoss(self.teacher, hp.first_bn_multiplier) as bn:
            for t in range(hp.iterations):
                for group, base in zip(opt.param_groups, base_lrs):
                    group["lr"] = warmup_cosine(t, hp.iterations, base, hp.warmup_iterations)
                x = self.standardize(fast(z, targets))  # in [0, 1] before normalising: always a valid image
                loss, terms = self.loss(self.view(x, 1, gen), targets, bn)
                self.check_finite(loss, terms, t, t == 0, "generator_lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_value = loss.item()
                if tick is not None:
                    tick()
        with torch.no_grad():  # the kept images: made as the loss saw them (batch statistics in the copy's BN)
            x = self.standardize(fast(z, targets))
        meta.reptile_step(fast)
        return x.detach(), loss_value

    def meta_generator(self) -> MetaGenerator:
        """This process's meta generator, made (or loaded from its file) at the first batch."""
        if self._meta is None:
            hp = self.hparams
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(hp.seed)
                net = ConditionalGenerator(self.spec.num_classes, self.spec.in_channels, self.spec.image_size,
                                           hp.z_dim, hp.generator_width).to(self.device)
            self._meta = MetaGenerator(net, hp.meta_lr, self.output_dir / "generator" / f"rank_{self.global_rank:02d}.pt")
        return self._meta

    def steps_per_batch(self) -> int:
        """Adam steps of one batch (low-resolution warm-up + full resolution): the progress bar's unit."""
        return self.hparams.lowres_iterations + self.hparams.iterations

    def view(self, canvas: torch.Tensor, factor: int, gen: torch.Generator) -> torch.Tensor:
        hp = self.hparams
        if self.regional_mode == "window":
            return random_windows(canvas, self.spec.image_size // factor, hp.flip_prob, hp.window_per_image, gen)
        if self.regional_mode == "zoom":
            return random_regions(canvas, tuple(canvas.shape[-2:]), tuple(hp.region_scale), tuple(hp.region_ratio),
                                  hp.flip_prob, gen)
        return jitter_flip(canvas, max(1, hp.jitter // factor) if hp.jitter else 0, hp.flip_prob, gen)

    def to_uint8(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean_std(x.device)
        return ((x * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Saved uint8 images as the teacher's input."""
        return self.standardize(images.float() / 255)

    @torch.no_grad()
    def evaluate_saved(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Teacher logits and quality metrics on the images *as saved* (8-bit PNG), not on a jittered view:
        these logits are the next round's soft labels and the set's stored soft labels. A ``window``
        canvas is judged on its centre window (the view later stages evaluate on); with
        ``window_labels: mean`` its labels are log of the mean softmax over all windows."""
        x = self.normalize(images)
        size = self.spec.image_size
        with BNStatisticsLoss(self.teacher, 1.0) as bn:
            logits = self.teacher(centre_window(x, size) if x.shape[-1] != size else x)
        if x.shape[-1] != size and self.hparams.window_labels == "mean":
            feats = self._features
            probs = torch.stack([F.softmax(self.teacher(w), 1) for w in all_windows(x, size)]).mean(0)
            logits, self._features = probs.clamp_min(1e-12).log(), feats  # features: the centre window's
        feats = self._features if self._features is not None else logits
        target_classes = targets.argmax(1)
        classes = logits.argmax(1)
        return {"targets": targets.cpu(), "target_classes": target_classes.cpu(), "logits": logits.cpu(),
                "classes": classes.cpu(), "teacher_top1": (classes == target_classes).float().mean().item(),
                "teacher_confidence": F.softmax(logits, 1).amax(1).mean().item(),
                "bn_distance": bn.unweighted().item() if bn.layers else float("nan"),
                "features": feats.detach().float().cpu()}

    # -- end of the run -------------------------------------------------------------------------------
    def on_train_end(self) -> None:
        self.trainer.strategy.barrier("synthesis-end")
        if not self.trainer.is_global_zero:
            return
        dm = self.trainer.datamodule
        manifest = self.writer.finalize({
            "dfnas_pl_version": __version__, "teacher": self.spec.describe(), "config": dict(self.hparams),
            "seed": self.hparams.seed, "rounds": self.hparams.rounds,
            "images_per_class_per_round": getattr(dm, "images_per_class", None),
            "batch_size": getattr(dm, "batch_size", None), "world_size": self.trainer.world_size,
            "class_names": self.spec.class_names, "canvas_size": self.canvas_size,
            "wall_time_s": round(time.time() - self._started, 1)})
        for logger in self.loggers:
            logger.log_metrics({f"synthetic_set/count_class_{k}": float(v)
                                for k, v in manifest["counts_per_class"].items()}
                               | {f"synthetic_set/{k}": float(v) for k, v in manifest["quality"].items()
                                  if k not in ("per_round", "non_finite") and v is not None})
        q = manifest["quality"]
        print(f"Synthetic set: {manifest['images']} images in '{self.output_dir}' | teacher top-1 "
              f"{q['teacher_top1']:.3f}, confidence {q['teacher_confidence']:.3f}, BN distance {q['bn_distance']:.3f}, "
              f"diversity {q['diversity']:.3f}")


def _seed(seed: int, round_: int, first_slot: int) -> int:
    """Seed of one batch's noise and views: depends on the batch, not on the rank or the restart,
    so a resumed or re-sharded run makes the same images."""
    return int(hashlib.sha256(f"{seed}/{round_}/{first_slot}".encode()).hexdigest()[:15], 16)
