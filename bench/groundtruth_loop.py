"""The ground truth's training loop against a bare PyTorch loop of the same model and batch (CPU, one thread).

A ground-truth job is thousands of SGD steps of one small network, so the loop around the step matters:

* ``bare``: forward, cross-entropy, backward, SGD step on batches already in memory, nothing else: the floor;
* ``tensor`` (``recipe.loop: tensor``, what the macro ground truth uses): the same plus batch augmentation
  (shift + flip), label smoothing, the LR schedule and the weight EMA;
* ``lightning`` (``recipe.loop: lightning``, the retraining stage): ``RetrainClassifier`` under a Lightning
  ``Trainer``, batches from the data module's tensor path (decoded once, cropped and flipped a batch at a time);
* ``lightning-transforms``: the same with ``loader: transforms``, torchvision transforms behind a DataLoader, one
  image at a time (the data path before the tensor one).

Each runs the most expensive macro network (every layer ``mbconv_k5_e6``) and the cheapest (every layer
identity), batch 128, in its own process, after warm-up steps; the result is seconds per step and the ratio
to ``bare``.

    python -m bench.groundtruth_loop --out bench/results.md        (make bench)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.report import machine, write_section

SPACE = {"family": "macro", "stem_channels": 6, "stage_channels": [6, 12, 24], "stage_layers": [2, 3, 3],
         "stage_strides": [2, 2, 2], "stem_stride": 2, "head_channels": 256, "in_channels": 1, "num_classes": 10,
         "image_size": 28}
NETWORKS = {"all mbconv_k5_e6": ["mbconv_k5_e6"] * 8, "all identity": ["identity"] * 8}
BATCH = 128


def measure(loop: str, network: str, steps: int, warmup: int, tensors: str) -> float:
    """Seconds per training step of one loop, in this process (one thread)."""
    import dataclasses

    import torch
    import torch.nn.functional as F

    from dfnas_pl.drivers.groundtruth import TrainingRecipe
    from dfnas_pl.drivers.tensor_training import load_tensors, train_on_tensors
    from dfnas_pl.search.export import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("macro", SPACE, NETWORKS[network])
    n = (steps + warmup) * BATCH
    if loop == "bare":
        data = load_tensors(Path(tensors))
        x, y = data["train_x"][:n], data["train_y"][:n]
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        model.train()
        for i in range(steps + warmup):
            if i == warmup:
                start = time.perf_counter()
            loss = F.cross_entropy(model(x[i * BATCH:(i + 1) * BATCH]), y[i * BATCH:(i + 1) * BATCH])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / steps
    recipe = dataclasses.replace(TrainingRecipe(), loop="tensor" if loop == "tensor" else "lightning",
                                 train_images=n, epochs=1, batch_size=BATCH, label_smoothing=0.1, augment=True,
                                 **({"ema_decay": 0.995, "flip_tta": True} if loop == "tensor" else {}))
    if loop == "tensor":
        data = load_tensors(Path(tensors))
        data = {**data, "test_x": data["test_x"][:BATCH], "test_y": data["test_y"][:BATCH]}  # the step, not the test
        # the warm-up run pays the first-call costs; the timed run is the same loop with more steps
        train_on_tensors(build_model("macro", SPACE, NETWORKS[network]),
                         data, dataclasses.replace(recipe, train_images=warmup * BATCH), 0)
        start = time.perf_counter()
        train_on_tensors(model, data, dataclasses.replace(recipe, train_images=steps * BATCH), 0)
        return (time.perf_counter() - start) / steps
    import lightning as L
    from torch.utils.data import DataLoader, Subset

    from dfnas_pl.data import FashionMNISTDataModule
    from dfnas_pl.retrain import RetrainClassifier
    from dfnas_pl.search.export import write_architecture

    arch = Path(tensors).parent / f"{network.replace(' ', '_')}.json"
    write_architecture(arch, "bench", "macro", {k: v for k, v in SPACE.items() if k != "image_size"}, 28,
                       NETWORKS[network])
    dm = FashionMNISTDataModule(root="data", batch_size=BATCH,
                                loader="transforms" if loop == "lightning-transforms" else "tensor")
    dm.setup("fit")
    if dm.tensor_path:
        train = dm.tensor_loader("train", index=dm.train_set.indices[:n])
    else:
        train = DataLoader(Subset(dm.train_set, range(n)), batch_size=BATCH, shuffle=True, drop_last=True)

    class StepClock(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == warmup:
                self.start = time.perf_counter()

    clock = StepClock()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=[clock], default_root_dir=str(Path(tensors).parent))
    trainer.fit(RetrainClassifier(str(arch), lr=0.2, label_smoothing=0.1), train_dataloaders=train)
    return (time.perf_counter() - clock.start) / steps


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", type=Path, default=None, help="bench/results.md: replace this benchmark's section")
    p.add_argument("--case", nargs=2, default=None, help=argparse.SUPPRESS)  # (loop, network): one measurement
    p.add_argument("--tensors", default="runs/bench/groundtruth_loop/tensors.pt", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.case:
        print(json.dumps({"seconds_per_step": measure(*a.case, a.steps, a.warmup, a.tensors)}))
        return
    from dfnas_pl.data import FashionMNISTDataModule
    from dfnas_pl.drivers.tensor_training import materialise

    Path(a.tensors).parent.mkdir(parents=True, exist_ok=True)
    if not Path(a.tensors).exists():
        materialise(FashionMNISTDataModule(root="data"), Path(a.tensors))
    rows = []
    for network in NETWORKS:
        times = {}
        for loop in ("bare", "tensor", "lightning", "lightning-transforms"):
            cmd = [sys.executable, "-m", "bench.groundtruth_loop", "--case", loop, network, "--steps", str(a.steps),
                   "--warmup", str(a.warmup), "--tensors", a.tensors]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            times[loop] = json.loads(out.strip().splitlines()[-1])["seconds_per_step"]
            print(f"{network}, {loop}: {times[loop]:.4f} s/step", flush=True)
        rows += [f"| {network} | {loop} | {t:.4f} | {t / times['bare']:.2f}x |" for loop, t in times.items()]
    lines = ["## The ground truth's training loop against a bare loop (CPU, one thread)", "",
             f"Machine: {machine()}. `python -m bench.groundtruth_loop --steps {a.steps} --warmup {a.warmup}`: the "
             f"macro space's dearest and cheapest networks, batch {BATCH}, seconds per step after {a.warmup} warm-up "
             f"steps, each loop in its own process (see the module docstring for what each loop does).", "",
             "| network | loop | s per step | vs bare |", "|---|---|---:|---:|", *rows]
    print("\n".join(lines))
    if a.out:
        write_section(a.out, lines)


if __name__ == "__main__":
    main()
