"""DrivingRuntime: a driving bundle served without PyTorch (onnxruntime + numpy).

An item is one observation (nested lists or an array of the bundle's shape and dtype) or
``{"observation": ..., "radar": ...}``: ``radar`` is the kinematics rows the safety shield checks
(for a kinematics bundle the observation is the radar). The policy graph picks an action, then
the shield (:mod:`aiforge.tasks.driving.shield`, numpy) may override it; every act says whether
it did. Batched: ``run_batch`` runs the graph once for all queued observations.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.bundle.format import BundleManifest
from aiforge.bundle.runtime import ItemLimits, Runtime, onnx_session
from aiforge.errors import BundleError, InputError
from aiforge.tasks.driving.shield import ShieldRules, shield_actions

__all__ = ["Act", "DrivingRuntime", "Observation"]


@dataclass(frozen=True)
class Observation:
    """A checked observation and, where given (or implied), the radar rows the shield reads."""

    observation: np.ndarray
    radar: np.ndarray | None


@dataclass(frozen=True)
class Act:
    """The action taken, what the policy proposed, and whether (and why) the shield overrode it."""

    action: str
    action_index: int
    proposed: str
    shield_overrode: bool
    shield_rule: str
    shield_checked: bool
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


class DrivingRuntime(Runtime):
    """A driving bundle: the policy graph (fp32 or int8), the action names and the shield's rules."""

    task = "driving"

    def __init__(self, path: Path, manifest: BundleManifest, *, precision: str = "auto",
                 threads: int | None = None) -> None:
        super().__init__(path, manifest)
        try:
            graphs: dict[str, str] = self.pipeline["graphs"]
            obs = self.pipeline["observation"]
            self.mode = str(obs["mode"])
            self.shape = tuple(int(d) for d in obs["shape"])
            self.dtype = np.dtype(obs["dtype"])
            self.labels = [str(a) for a in self.pipeline["actions"]]
            self.radar_shape = tuple(int(d) for d in self.pipeline["radar"]["shape"])
            shield = self.pipeline["shield"]
            self.shield_enabled = bool(shield["enabled"])
            self.rules = ShieldRules.from_dict(dict(shield["rules"]))
            self.env: dict[str, Any] = dict(self.pipeline["env"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{path}: pipeline.json is incomplete ({exc}).") from exc
        chosen = self.pipeline.get("default_precision", "fp32") if precision == "auto" else precision
        chosen = "int8" if chosen == "int8-only" else chosen
        if chosen not in graphs:
            raise BundleError(f"{path}: no {chosen!r} graph in this bundle; it has {sorted(graphs)}.")
        self.precision = chosen
        self.session = onnx_session(path / graphs[chosen], threads=threads)
        self._input = self.pipeline.get("input", "observation")
        self._output = self.pipeline.get("output", "logits")
        self._lock = threading.Lock()
        self._counts = {"acts": 0, "shield_overrides": 0}

    @classmethod
    def open(cls, path: Path, manifest: BundleManifest, *, precision: str = "auto",
             threads: int | None = None) -> DrivingRuntime:
        return cls(path, manifest, precision=precision, threads=threads)

    # --- checking items ----------------------------------------------------------------

    def _expect(self) -> str:
        return f"shape {list(self.shape)} ({self.dtype.name})"

    def check_observation(self, value: Any, where: str) -> np.ndarray:
        """``value`` as an array of the bundle's shape and dtype.

        Raises:
            InputError: wrong shape, non-numeric or non-finite values, or (camera) values outside 0-255;
                the message names ``where`` and the expected shape.
        """
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            raise InputError(f"{where}: expected an observation of {self._expect()}, got a ragged array") from None
        if arr.shape != self.shape:
            raise InputError(f"{where}: expected an observation of {self._expect()}, got shape {list(arr.shape)}")
        if arr.dtype.kind not in "iuf" or arr.dtype == np.bool_:
            raise InputError(f"{where}: expected numbers ({self.dtype.name}) of shape {list(self.shape)}, "
                             f"got {arr.dtype.name} values")
        if self.dtype == np.uint8:
            if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
                raise InputError(f"{where}: expected whole pixel values (uint8) of shape {list(self.shape)}, "
                                 "got fractions")
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise InputError(f"{where}: expected pixel values 0-255 (uint8) of shape {list(self.shape)}, "
                                 f"got values from {arr.min()} to {arr.max()}")
            return arr.astype(np.uint8)
        out = arr.astype(np.float32)
        if not np.all(np.isfinite(out)):
            raise InputError(f"{where}: expected finite float32 values of shape {list(self.shape)}, got NaN or "
                             "infinity (or a value beyond float32)")
        return out

    def _radar(self, value: Any, where: str) -> np.ndarray:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError):
            raise InputError(f"{where}: expected radar rows of shape {list(self.radar_shape)} (float32)") from None
        if arr.shape != self.radar_shape or not np.all(np.isfinite(arr)):
            raise InputError(f"{where}: expected finite radar rows of shape {list(self.radar_shape)} (float32: "
                             f"presence, x, y, vx, vy, cos_h, sin_h), got shape {list(arr.shape)}")
        return arr.astype(np.float32)

    def parse_item(self, item: Any, where: str) -> Observation:
        """One request item (an observation, or ``{"observation", "radar"}``) checked.

        Raises:
            InputError: names ``where``, the field and the expected shape.
        """
        if isinstance(item, Observation):
            return item
        radar = None
        if isinstance(item, dict):
            unknown = sorted(set(item) - {"observation", "radar"})
            if unknown or "observation" not in item:
                raise InputError(f"{where}: expected {{\"observation\": [...], \"radar\": [...] (optional)}}, "
                                 f"got keys {sorted(item)}")
            if item.get("radar") is not None:
                radar = self._radar(item["radar"], f"{where}.radar")
            item = item["observation"]
            where = f"{where}.observation"
        obs = self.check_observation(item, where)
        if radar is None and self.mode == "kinematics":
            radar = obs
        return Observation(obs, radar)

    def parse_items(self, items: list[Any], where: str, limits: ItemLimits) -> list[Any]:
        return [self.parse_item(item, f"{where}[{i}]") for i, item in enumerate(items)]

    def v2_inputs(self, tensors: list[dict[str, Any]]) -> list[Any]:
        """Observations from an ``observation`` tensor [n, *shape] (FP32 or UINT8) and an optional ``radar`` one."""
        by_name = {str(t.get("name")): t for t in tensors}
        unknown = sorted(set(by_name) - {"observation", "radar"})
        if unknown or "observation" not in by_name:
            raise InputError(f"expected input tensors 'observation' [n, {', '.join(map(str, self.shape))}] and "
                             f"optionally 'radar' [n, {', '.join(map(str, self.radar_shape))}], got {sorted(by_name)}")

        def rows(name: str, shape: tuple[int, ...]) -> np.ndarray:
            t = by_name[name]
            dtype = str(t.get("datatype", "")).upper()
            if dtype not in ("FP32", "FP64", "UINT8", "INT32", "INT64"):
                raise InputError(f"inputs {name!r}: datatype must be FP32 or UINT8, got {t.get('datatype')!r}")
            got = list(t.get("shape") or [])
            data = t.get("data") or []
            if len(got) != len(shape) + 1 or tuple(got[1:]) != shape:
                raise InputError(f"inputs {name!r}: expected shape [n, {', '.join(map(str, shape))}], got {got}")
            try:
                arr = np.asarray(data, dtype=np.float64)
            except (ValueError, TypeError):
                raise InputError(f"inputs {name!r}: data must be numbers") from None
            if arr.size != int(np.prod(got)):
                raise InputError(f"inputs {name!r}: shape {got} does not match {arr.size} data elements")
            return arr.reshape(got)

        obs = rows("observation", self.shape)
        radar = rows("radar", self.radar_shape) if "radar" in by_name else None
        if radar is not None and len(radar) != len(obs):
            raise InputError(f"inputs 'radar': {len(radar)} rows for {len(obs)} observations")
        return [{"observation": o, "radar": None if radar is None else radar[i]} for i, o in enumerate(obs)]

    def v2_metadata_inputs(self) -> list[dict[str, Any]]:
        dtype = "UINT8" if self.dtype == np.uint8 else "FP32"
        return [{"name": "observation", "datatype": dtype, "shape": [-1, *self.shape]},
                {"name": "radar", "datatype": "FP32", "shape": [-1, *self.radar_shape], "optional": True}]

    def v2_output_names(self) -> tuple[str, ...]:
        return ("action", "action_index", "shield_overrode", "probabilities")

    def v2_metadata_outputs(self) -> list[dict[str, Any]]:
        return [{"name": "action", "datatype": "BYTES", "shape": [-1]},
                {"name": "action_index", "datatype": "INT64", "shape": [-1]},
                {"name": "shield_overrode", "datatype": "BOOL", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(self.labels)]}]

    def v2_outputs(self, results: Sequence[Any]) -> dict[str, dict[str, Any]]:
        acts: list[Act] = list(results)
        n = len(acts)
        return {
            "action": {"name": "action", "datatype": "BYTES", "shape": [n], "data": [a.action for a in acts]},
            "action_index": {"name": "action_index", "datatype": "INT64", "shape": [n],
                             "data": [a.action_index for a in acts]},
            "shield_overrode": {"name": "shield_overrode", "datatype": "BOOL", "shape": [n],
                                "data": [a.shield_overrode for a in acts]},
            "probabilities": {"name": "probabilities", "datatype": "FP32", "shape": [n, len(self.labels)],
                              "data": [p for a in acts for p in a.probabilities.values()]},
        }

    # --- acting ------------------------------------------------------------------------

    def logits(self, observations: np.ndarray) -> np.ndarray:
        """The policy graph's logits for a batch of observations (n, *shape)."""
        x = np.ascontiguousarray(observations, dtype=np.float32)
        return np.asarray(self.session.run([self._output], {self._input: x})[0])

    def predict_proba(self, items: list[Any]) -> np.ndarray:
        """The policy's action probabilities (before the shield), one row per observation."""
        parsed = [self.parse_item(it, f"items[{i}]") for i, it in enumerate(items)]
        if not parsed:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return _softmax(self.logits(np.stack([p.observation for p in parsed])))

    def run_batch(self, items: list[Any]) -> list[Act]:
        """One :class:`Act` per observation: the graph's greedy action, then the shield."""
        parsed = [self.parse_item(it, f"items[{i}]") for i, it in enumerate(items)]
        if not parsed:
            return []
        probs = _softmax(self.logits(np.stack([p.observation for p in parsed])))
        proposed = probs.argmax(axis=1)
        final, overrode, reasons = proposed.copy(), np.zeros(len(parsed), bool), [""] * len(parsed)
        checked = np.array([p.radar is not None for p in parsed])
        if self.shield_enabled and checked.any():
            idx = np.flatnonzero(checked)
            radars = [r for i in idx if (r := parsed[i].radar) is not None]
            decision = shield_actions(np.stack(radars), proposed[idx], rules=self.rules,
                                      actions=tuple(self.labels))
            final[idx], overrode[idx] = decision.actions, decision.overrode
            for j, i in enumerate(idx):
                reasons[i] = decision.reasons[j]
        with self._lock:
            self._counts["acts"] += len(parsed)
            self._counts["shield_overrides"] += int(overrode.sum())
        return [Act(self.labels[int(f)], int(f), self.labels[int(p)], bool(o), r, bool(self.shield_enabled and c),
                    {y: float(v) for y, v in zip(self.labels, row, strict=True)})
                for f, p, o, r, c, row in zip(final, proposed, overrode, reasons, checked, probs, strict=True)]

    def act(self, observations: list[Any]) -> list[Act]:
        """Actions for observations (or ``{"observation", "radar"}`` dicts), shield applied."""
        return self.run_batch(list(observations))

    def warmup(self) -> None:
        for n in (1, 4):
            self.logits(np.zeros((n, *self.shape), dtype=np.float32))

    def counters(self) -> dict[str, int]:
        """Acts since load and how many the shield overrode."""
        with self._lock:
            return dict(self._counts)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["observation"] = {"mode": self.mode, "shape": list(self.shape), "dtype": self.dtype.name}
        info["shield"] = {"enabled": self.shield_enabled, **self.rules.to_dict()}
        return info
