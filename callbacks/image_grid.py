"""Image grids of the synthesised images, one per round: to PNG files in the run dir and to the
active loggers (W&B ``log_image``, TensorBoard ``add_image``).

Rows are classes (the teacher's argmax on the saved image), labelled with the class names (the
teacher's, else ``class <k>``), columns up to ``per_class`` images, so a glance shows whether every
class is present and how varied the images of a class are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torchvision.io import encode_png
from torchvision.utils import make_grid

from dfnas_pl.utils.io import atomic_write_bytes


class SynthesisImageGrid(L.Callback):
    """Logs a grid of synthesised images per class after each synthesis round.

    Args:
        per_class: images per class (columns) in each grid.
        upscale: nearest-neighbour zoom so 28x28 images are visible in a dashboard.
        dirname: folder under the synthesis output dir for the PNG grids.
        max_classes: at most this many rows, classes evenly spaced over the label range (1,000 ImageNet
            classes would make a grid too tall to look at); null: every class.
    """

    def __init__(self, per_class: int = 8, upscale: int = 2, dirname: str = "grids",
                 max_classes: int | None = None) -> None:
        if max_classes is not None and max_classes < 1:
            raise ValueError(f"max_classes must be >= 1 or null, got {max_classes}.")
        self.per_class, self.upscale, self.dirname, self.max_classes = per_class, upscale, dirname, max_classes
        self._by_class: dict[int, list[torch.Tensor]] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._by_class = {}

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch, batch_idx: int) -> None:
        if not isinstance(outputs, dict) or "images" not in outputs:
            return
        for img, k in zip(outputs["images"], outputs["classes"].tolist()):
            bucket = self._by_class.setdefault(k, [])
            if len(bucket) < self.per_class:
                bucket.append(img)

    def rows(self, num_classes: int) -> list[int]:
        """The classes shown, one per row."""
        if self.max_classes is None or self.max_classes >= num_classes:
            return list(range(num_classes))
        step = -(-num_classes // self.max_classes)
        return list(range(0, num_classes, step))[: self.max_classes]

    def grid(self, num_classes: int) -> torch.Tensor | None:
        """uint8 [C, H, W] grid, rows = classes; empty cells are white. None if nothing was collected."""
        if not self._by_class:
            return None
        sample = next(iter(self._by_class.values()))[0]
        blank = torch.full_like(sample, 255)
        cells = [img for k in self.rows(num_classes)
                 for img in (self._by_class.get(k, []) + [blank] * self.per_class)[: self.per_class]]
        batch = torch.stack(cells).float()
        if self.upscale > 1:
            batch = F.interpolate(batch, scale_factor=self.upscale, mode="nearest")
        grid = make_grid(batch, nrow=self.per_class, padding=2, pad_value=128)
        return grid.round().clamp(0, 255).to(torch.uint8)

    @staticmethod
    def label_rows(grid: torch.Tensor, names: list[str], padding: int = 2) -> torch.Tensor:
        """The grid with a white margin on the left holding each row's class name (PIL's built-in font)."""
        from PIL import Image, ImageDraw, ImageFont

        rows = len(names)
        cell = (grid.shape[1] - padding) // max(rows, 1) - padding
        font = ImageFont.load_default()
        probe = ImageDraw.Draw(Image.new("L", (1, 1)))
        width = max(int(probe.textlength(n, font=font)) for n in names) + 8
        img = Image.fromarray(grid.permute(1, 2, 0).squeeze(-1).numpy() if grid.shape[0] == 1
                              else grid.permute(1, 2, 0).numpy())
        out = Image.new(img.mode, (img.width + width, img.height), 255 if img.mode == "L" else (255, 255, 255))
        out.paste(img, (width, 0))
        draw = ImageDraw.Draw(out)
        for i, name in enumerate(names):
            y = padding + i * (cell + padding) + cell // 2 - 5
            draw.text((4, y), name, fill=0 if img.mode == "L" else (0, 0, 0), font=font)
        t = torch.from_numpy(np.array(out))
        return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        num_classes = getattr(getattr(pl_module, "spec", None), "num_classes", None) or (max(self._by_class) + 1
                                                                                         if self._by_class else 0)
        grid = self.grid(num_classes)
        if grid is None:
            return  # every batch of this round was finished before a restart
        names = list(getattr(getattr(pl_module, "spec", None), "class_names", None) or [])
        grid = self.label_rows(grid, [names[k] if len(names) == num_classes else f"class {k}"
                                      for k in self.rows(num_classes)])
        round_ = trainer.current_epoch
        root = Path(getattr(pl_module, "output_dir", None) or trainer.default_root_dir)
        atomic_write_bytes(root / self.dirname / f"round_{round_:02d}.png", encode_png(grid).numpy().tobytes())
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="synthesis/images", images=[grid.permute(1, 2, 0).numpy()],
                                 caption=[f"round {round_} (rows: classes, labelled)"])
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("synthesis/images", grid, global_step=round_)
