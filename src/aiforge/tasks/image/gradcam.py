"""Grad-CAM (Selvaraju et al., 2017): where in the image the evidence for a class lies.

The class score's gradient with respect to convolutional feature maps, averaged over space,
weights those maps; their ReLU'd sum, upsampled, is the heat map.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from aiforge.tasks.image.model import ImageClassifier

__all__ = ["gradcam", "overlay"]


def gradcam(model: ImageClassifier, pixels: np.ndarray, classes: list[int], *, min_size: int = 4) -> np.ndarray:
    """Heat maps in [0, 1], shape (n, h, w), one per image and class.

    The maps are taken at the last convolutional output when it is at least ``min_size``
    pixels across (7x7 at 224 px); at small input resolutions (1x1 at 32 px) the deepest
    block output that still is, so the map has something to show.
    """
    device = next(model.parameters()).device
    model.eval()
    x = torch.from_numpy(pixels).to(device)
    outputs: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for block in model.net._blocks]
    try:
        with torch.enable_grad():
            maps = model.feature_maps(x)
            logits = model.head(maps.mean(dim=(2, 3)))
            target = maps if min(maps.shape[-2:]) >= min_size else next(
                (o for o in reversed(outputs) if min(o.shape[-2:]) >= min_size), outputs[0])
            chosen = logits[torch.arange(len(classes)), torch.tensor(classes, device=device)]
            (grads,) = torch.autograd.grad(chosen.sum(), target)
    finally:
        for hook in hooks:
            hook.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * target.detach()).sum(dim=1)).float().cpu().numpy()
    top = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    out: np.ndarray = np.divide(cam, top, out=np.zeros_like(cam), where=top > 0)
    return out


def _jet(v: np.ndarray) -> np.ndarray:
    """The 'jet' colour map (blue -> red) for values in [0, 1], as uint8 RGB."""
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def overlay(image: Image.Image, cam: np.ndarray, *, size: int = 160, alpha: float = 0.45) -> Image.Image:
    """``image`` (resized to ``size`` square) with the heat map blended over it."""
    base = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    heat = Image.fromarray((cam * 255).astype(np.uint8), "L").resize((size, size), Image.Resampling.BICUBIC)
    colour = Image.fromarray(_jet(np.asarray(heat, dtype=np.float32) / 255.0), "RGB")
    return Image.blend(base, colour, alpha)
