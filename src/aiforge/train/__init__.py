"""The shared PyTorch fine-tuning loop."""

from aiforge.train.loop import LoopConfig, LoopResult, fit_loop, seed_everything

__all__ = ["LoopConfig", "LoopResult", "fit_loop", "seed_everything"]
