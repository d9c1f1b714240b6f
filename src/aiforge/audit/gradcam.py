"""Grad-CAM (Selvaraju et al., 2017): where in the image the evidence for a class lies.

The class score's gradient with respect to the last convolutional feature maps, averaged
over space, weights those maps; their ReLU'd sum, upsampled, is the heat map.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from aiforge.vision.model import ImageClassifier

__all__ = ["gradcam", "overlay"]


def gradcam(model: ImageClassifier, pixels: np.ndarray, classes: list[int]) -> np.ndarray:
    """Heat maps in [0, 1], shape (n, h, w) at the feature-map resolution, one per image and class."""
    device = next(model.parameters()).device
    model.eval()
    x = torch.from_numpy(pixels).to(device)
    with torch.enable_grad():
        maps = model.feature_maps(x).detach().requires_grad_(True)
        logits = model.head(maps.mean(dim=(2, 3)))
        chosen = logits[torch.arange(len(classes)), torch.tensor(classes, device=device)]
        (grads,) = torch.autograd.grad(chosen.sum(), maps)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * maps).sum(dim=1)).detach().float().cpu().numpy()
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
