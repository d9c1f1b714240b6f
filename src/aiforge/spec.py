"""AppSpec: the typed form of ``aiforge.yaml``.

Every model forbids unknown keys; errors name the YAML path, the file and, where one is
close, the key that was probably meant.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aiforge.errors import SpecError

__all__ = [
    "AppSpec",
    "DataSpec",
    "ModelSpec",
    "OptimizeSpec",
    "ServeSpec",
    "TrainSpec",
    "load_spec",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    """Where the examples are and which columns hold text and label."""

    train: Path
    test: Path | None = None
    validation: Path | None = None
    format: Literal["auto", "csv", "jsonl", "parquet"] = "auto"
    text_column: str = "text"
    label_column: str = "label"
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    max_per_label: int | None = Field(default=None, gt=1)


class ModelSpec(_Strict):
    """Which pre-trained backbone and how to adapt it."""

    backbone: str = "minilm-l6"
    mode: Literal["head", "full"] = "head"
    head: Literal["linear", "mlp"] = "linear"
    max_length: int = Field(default=64, ge=8, le=512)


class TrainSpec(_Strict):
    """Optimiser and schedule; defaults suit the chosen mode."""

    seed: int = 0
    epochs: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    head_lr: float | None = Field(default=None, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    label_smoothing: float | None = Field(default=None, ge=0, lt=1)
    patience: int | None = Field(default=None, ge=1)
    threads: int | None = Field(default=None, gt=0)


class OptimizeSpec(_Strict):
    """Export options: int8 quantization and the parity budget it must meet."""

    quantize: bool = True
    max_prob_diff: float = Field(default=1e-4, gt=0)
    min_int8_agreement: float = Field(default=0.99, gt=0, le=1)
    parity_samples: int = Field(default=2000, gt=0)


class ServeSpec(_Strict):
    """Server settings used by ``aiforge serve``."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    max_batch_size: int = Field(default=64, gt=0)
    max_wait_ms: float = Field(default=5.0, ge=0)
    precision: Literal["auto", "fp32", "int8"] = "auto"


class AppSpec(_Strict):
    """A whole application: data, backbone, training, export and serving."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    task: Literal["text-classification"] = "text-classification"
    data: DataSpec
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    optimize: OptimizeSpec = OptimizeSpec()
    serve: ServeSpec = ServeSpec()
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _test_differs_from_train(self) -> AppSpec:
        if self.data.test is not None and self.data.test == self.data.train:
            raise ValueError("data.test must not be the same file as data.train")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> AppSpec:
        """Read and validate ``aiforge.yaml``; relative data paths resolve against its folder.

        Raises:
            SpecError: the file is missing, not YAML, or breaks the schema.
        """
        return load_spec(path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, base_dir: Path | None = None,
                  source: str = "<dict>") -> AppSpec:
        """Validate a spec given as a mapping (the parsed YAML).

        Raises:
            SpecError: a key is unknown or a value is of the wrong type.
        """
        if not isinstance(raw, dict):
            raise SpecError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}.")
        raw = dict(raw)
        base = base_dir or Path.cwd()
        data = raw.get("data")
        if isinstance(data, dict):
            data = dict(data)
            for key in ("train", "test", "validation"):
                if isinstance(data.get(key), str | Path):
                    data[key] = str((base / data[key]).resolve())
            raw["data"] = data
        try:
            spec = cls.model_validate(raw)
        except ValidationError as exc:
            raise SpecError(_explain(exc, source)) from exc
        return spec.model_copy(update={"source": Path(source) if source != "<dict>" else None})


def load_spec(path: str | Path) -> AppSpec:
    """Read ``aiforge.yaml`` into an :class:`AppSpec`.

    Raises:
        SpecError: the file is missing, not YAML, or breaks the schema.
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: spec file not found. Pass the path of an aiforge.yaml.")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{p}: not valid YAML ({exc}).") from exc
    return AppSpec.from_dict(raw, base_dir=p.resolve().parent, source=str(p))


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of ``loc``."""
    model: type[BaseModel] = AppSpec
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _explain(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            owner = _model_at(loc)
            valid = [k for k, f in owner.model_fields.items() if not f.exclude] if owner else []
            guess = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            lines.append(f"{source}: unknown key {where!r}.{hint} Valid keys here: {', '.join(valid)}.")
        elif err["type"] == "missing":
            lines.append(f"{source}: {where}: required key is missing.")
        else:
            got = err.get("input")
            lines.append(f"{source}: {where}: {err['msg']} (got {got!r}).")
    return " ".join(lines)
