"""Find Fashion-MNIST on this machine without a download.

Debian's ``dataset-fashion-mnist`` package installs the four original ``.gz`` files in
``/usr/share/datasets/fashion-mnist/``; torchvision reads them once they are gunzipped into
``<root>/FashionMNIST/raw/``. Where neither exists, torchvision's own download is the fallback
(on a machine with internet).
"""

from __future__ import annotations

import gzip
from pathlib import Path

from dfnas_pl.utils.io import atomic_write_bytes

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def raw_dir(root: str | Path) -> Path:
    return Path(root) / "FashionMNIST" / "raw"


def is_prepared(root: str | Path) -> bool:
    return all((raw_dir(root) / name).is_file() for name in FILES)


def prepare_fashion_mnist(root: str | Path, source: str | Path = DEBIAN_DIR) -> bool:
    """Gunzip the Debian package's files into ``root``; returns False when they are not installed."""
    if is_prepared(root):
        return True
    source = Path(source)
    if not all((source / f"{name}.gz").is_file() for name in FILES):
        return False
    for name in FILES:
        with gzip.open(source / f"{name}.gz", "rb") as f:
            atomic_write_bytes(raw_dir(root) / name, f.read())
    return True


def missing_data_message(root: str | Path) -> str:
    return (
        f"Fashion-MNIST was not found in '{raw_dir(root)}' nor in '{DEBIAN_DIR}', and torchvision could not "
        f"download it. Install the Debian package (`make install`, or `sudo apt-get install "
        f"dataset-fashion-mnist`), or place the four idx files in '{raw_dir(root)}'."
    )

