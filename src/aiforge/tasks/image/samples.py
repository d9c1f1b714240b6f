"""Image sample data from installed packages: Fashion-MNIST (Debian's ``dataset-fashion-mnist``)
and scikit-image's bundled photos, with the ImageNet classes a correct classifier ranks first."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiforge.errors import DataError
from aiforge.tasks.image.dataset import read_idx

if TYPE_CHECKING:
    pass


__all__ = ["FASHION_MNIST_LABELS", "fashion_mnist_paths", "load_fashion_mnist", "sample_photos", "write_digits_folder"]


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                        "Bag", "Ankle boot"]


FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def fashion_mnist_paths(split: str = "train", *, directory: Path | None = None) -> tuple[Path, Path]:
    """The (images, labels) IDX files of a Fashion-MNIST split ("train" or "test").

    Raises:
        DataError: the files are not there (the message says how to install them).
    """

    folder = directory or FASHION_MNIST_DIR
    if split not in FASHION_MNIST_FILES:
        raise DataError(f"Fashion-MNIST split {split!r} does not exist; use 'train' or 'test'.")
    paths = tuple(folder / name for name in FASHION_MNIST_FILES[split])
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"Fashion-MNIST not found: {folder} lacks {missing}. Install the Debian package with "
                        "`sudo apt-get install dataset-fashion-mnist` (or pass the folder that holds the four "
                        ".gz files).")
    return paths[0], paths[1]


def load_fashion_mnist(split: str = "train", *, directory: Path | None = None) -> tuple[Any, list[str]]:
    """Fashion-MNIST images (uint8 array n x 28 x 28) and their class names.

    Raises:
        DataError: the data set is not installed or a file is damaged.
    """

    images, labels = fashion_mnist_paths(split, directory=directory)
    return read_idx(images), [FASHION_MNIST_LABELS[int(y)] for y in read_idx(labels)]


# scikit-image sample photos and ImageNet classes a correct classifier puts in its top 5.
SAMPLE_PHOTOS: dict[str, list[str]] = {
    "chelsea": ["tabby", "tiger cat", "Egyptian cat"],
    "coffee": ["espresso", "cup", "coffee mug"],
    "rocket": ["missile", "projectile", "space shuttle"],
    "astronaut": [],  # no ImageNet class for astronauts: shown, not asserted
}


def sample_photos() -> dict[str, Any]:
    """scikit-image's bundled sample photos as RGB uint8 arrays, by name."""
    import skimage.data

    return {name: getattr(skimage.data, name)() for name in SAMPLE_PHOTOS}


def write_digits_folder(root: Path, *, n_test: int = 397, seed: int = 0) -> Path:
    """scikit-learn's 1,797 digits (8x8, 0-16) as ``train/`` and ``test/`` image folders of 32x32 PNGs.

    The split is seeded and stratified (``n_test`` test images); each image is upscaled by nearest
    neighbour so the folder reads like any small user data set. Returns ``root``.
    """
    import numpy as np  # lazy: sample data only
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train, test = train_test_split(np.arange(len(digits.target)), test_size=n_test, random_state=seed,
                                   stratify=digits.target)
    for split, ids in (("train", train), ("test", test)):
        for i in ids:
            folder = root / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
            Image.fromarray(pixels).resize((32, 32), Image.Resampling.NEAREST).save(folder / f"{i:04d}.png")
    return root
