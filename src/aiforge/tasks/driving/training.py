"""Imitation learning: behaviour cloning on expert drives, then DAgger rounds (PyTorch).

Round 0 drives the expert and records (observation, expert action). Each DAgger round drives a
mixture (the expert with probability beta, else the network; beta halves each round), lets the
expert label every state it visits, adds them to the data and trains again on all of it.
Camera networks also learn their perception head: its target for each frame is
:class:`~aiforge.tasks.driving.model.LaneFeatures` of the radar rows the simulator gave at that
step (used at training time only), weighted by ``train.perception_weight`` beside the action loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from aiforge.tasks.driving.env import env_info
from aiforge.tasks.driving.expert import Expert
from aiforge.tasks.driving.model import CameraNet, DrivingNet, LaneFeatures, build_net
from aiforge.tasks.driving.rollout import run_episodes
from aiforge.tasks.driving.spec import DrivingSpec

__all__ = ["ExpertPolicy", "ImitationResult", "TorchPolicy", "imitate"]


class ExpertPolicy:
    """The expert as a :class:`~aiforge.tasks.driving.rollout.Policy`."""

    name = "expert"

    def __init__(self, expert: Expert) -> None:
        self.expert = expert

    def act(self, env: Any, radar: np.ndarray, observation: np.ndarray) -> int:
        return self.expert.act(env, radar)


class TorchPolicy:
    """A trained network driving in PyTorch (greedy: the highest logit)."""

    name = "aiforge"

    def __init__(self, net: DrivingNet) -> None:
        self.net = net.eval()

    def act(self, env: Any, radar: np.ndarray, observation: np.ndarray) -> int:
        with torch.no_grad():
            return int(self.net(torch.from_numpy(np.asarray(observation, dtype=np.float32)[None])).argmax())


class _Mixture:
    name = "dagger-mixture"

    def __init__(self, expert: Expert, net: DrivingNet, beta: float, rng: np.random.Generator) -> None:
        self.expert, self.policy, self.beta, self.rng = expert, TorchPolicy(net), beta, rng

    def act(self, env: Any, radar: np.ndarray, observation: np.ndarray) -> int:
        if self.rng.random() < self.beta:
            return self.expert.act(env, radar)
        return self.policy.act(env, radar, observation)


@dataclass
class ImitationResult:
    """The trained network and how it got there."""

    net: DrivingNet
    observations: np.ndarray  # every labelled state (the parity and int8 gates reuse them)
    labels: np.ndarray
    radar: np.ndarray  # the kinematics rows of each state (the perception head's targets come from them)
    env_steps: int
    train_seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def _epochs(n: int, *, epochs: int, batch_size: int, min_updates: int) -> int:
    """``epochs``, raised so that the fit makes at least ``min_updates`` gradient updates on ``n`` states."""
    per_epoch = max(1, -(-n // batch_size))
    return max(epochs, -(-min_updates // per_epoch))


def perception_targets(radar: np.ndarray) -> np.ndarray:
    """The camera perception head's targets: lane features of the radar rows (clipped to +-5)."""
    with torch.no_grad():
        out: np.ndarray = LaneFeatures()(torch.from_numpy(radar.astype(np.float32))).clamp(-5.0, 5.0).numpy()
    return out


def _predict(net: DrivingNet, xt: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net(xt[i:i + 512]).argmax(1) for i in range(0, len(xt), 512)])


def _fit(net: DrivingNet, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, lr: float,
         seed: int, min_updates: int = 0, radar: np.ndarray | None = None, perception_weight: float = 1.0,
         ) -> float:
    epochs = _epochs(len(x), epochs=epochs, batch_size=batch_size, min_updates=min_updates)
    gen = torch.Generator().manual_seed(seed)
    # camera frames stay uint8 here (the net scales them): float32 copies of every frame would not fit
    xt, yt = torch.from_numpy(x if x.dtype == np.uint8 else x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    camera = isinstance(net, CameraNet) and radar is not None
    ft = torch.from_numpy(perception_targets(radar)) if camera and radar is not None else None
    counts = np.bincount(y, minlength=net.n_actions).astype(np.float32)
    weights = torch.from_numpy(np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** 0.5, 0.0)).float()
    loss_fn = nn.CrossEntropyLoss(weight=weights / weights[weights > 0].mean())
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * max(1, -(-len(xt) // batch_size)),
                                                       eta_min=lr / 20)
    net.train()
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            if ft is not None and isinstance(net, CameraNet):
                logits, features = net.logits_and_features(xt[idx])
                # squared error summed over the 22 features, mean over the batch
                loss = loss_fn(logits, yt[idx]) + perception_weight * ((features - ft[idx]) ** 2).sum(1).mean()
            else:
                loss = loss_fn(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    return float((_predict(net, xt) == yt).float().mean())


def imitate(spec: DrivingSpec, *, log: Callable[[str], None] = lambda s: None) -> ImitationResult:
    """Behaviour cloning on ``train.expert_episodes`` expert drives, then ``train.dagger_rounds`` DAgger rounds."""
    t, env = spec.train, spec.env
    torch.manual_seed(t.seed)
    info = env_info(env)
    expert = Expert(actions=info.actions, scenario=env.scenario)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    rs: list[np.ndarray] = []

    def label(e: Any, radar: np.ndarray, observation: np.ndarray, action: int) -> None:
        xs.append(np.array(observation, copy=True))
        rs.append(np.array(radar, dtype=np.float32, copy=True))
        ys.append(expert.act(e, radar))

    def taken(e: Any, radar: np.ndarray, observation: np.ndarray, action: int) -> None:
        xs.append(np.array(observation, copy=True))  # the expert drove: its action is the label
        rs.append(np.array(radar, dtype=np.float32, copy=True))
        ys.append(action)

    start = time.perf_counter()
    base = t.seed * 100_000
    seeds = list(range(base, base + t.expert_episodes))
    episodes = run_episodes(ExpertPolicy(expert), env, seeds=seeds, on_step=taken)
    steps = sum(e.steps for e in episodes)
    net = build_net(mode=env.observation, shape=info.observation_shape, n_actions=len(info.actions),
                    hidden=t.hidden, mask_ego_x=env.scenario == "highway",
                    lanes=env.scenario != "intersection")
    history = []
    acc = _fit(net, np.stack(xs), np.array(ys), epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, seed=t.seed,
               min_updates=t.min_updates, radar=np.stack(rs), perception_weight=t.perception_weight)
    history.append({"round": 0, "states": float(len(ys)), "train_accuracy": acc})
    log(f"behaviour cloning: {len(ys)} expert states, train accuracy {acc:.3f}")
    rng = np.random.default_rng(t.seed)
    beta = t.dagger_beta
    for r in range(1, t.dagger_rounds + 1):
        seeds = list(range(base + 1000 * r, base + 1000 * r + t.dagger_episodes))
        driven = run_episodes(_Mixture(expert, net, beta, rng), env, seeds=seeds, on_step=label)
        steps += sum(e.steps for e in driven)
        crashes = sum(e.crashed for e in driven)
        acc = _fit(net, np.stack(xs), np.array(ys), epochs=max(1, t.epochs // 2), batch_size=t.batch_size,
                   lr=t.lr / 2, seed=t.seed + r, min_updates=t.min_updates // 2, radar=np.stack(rs),
                   perception_weight=t.perception_weight)
        history.append({"round": float(r), "states": float(len(ys)), "train_accuracy": acc, "beta": beta,
                        "crashes": float(crashes), "episodes": float(len(driven))})
        log(f"DAgger round {r}: {len(ys)} states, beta {beta:.2f}, {crashes}/{len(driven)} crashes, "
            f"train accuracy {acc:.3f}")
        beta /= 2
    return ImitationResult(net.eval(), np.stack(xs), np.array(ys), np.stack(rs), steps, time.perf_counter() - start,
                           history)
