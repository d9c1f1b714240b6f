"""AppSpec: the typed form of ``aiforge.yaml``.

Every model forbids unknown keys; errors name the YAML path, the file and, where one is
close, the key that was probably meant.
"""

from __future__ import annotations

import difflib
import importlib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from aiforge.errors import SpecError

__all__ = [
    "SPECS",
    "AppSpec",
    "BaseSpec",
    "DataPath",
    "DataSpec",
    "ModelSpec",
    "OptimizeSpec",
    "ServeSpec",
    "TrainSpec",
    "load_spec",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return (Path(base) / value).resolve() if base is not None and not value.is_absolute() else value


# A file or folder named in the spec; relative paths resolve against the YAML's folder.
DataPath = Annotated[Path, AfterValidator(_resolve_path)]


class DataSpec(_Strict):
    """Where the examples are and which columns hold text and label."""

    train: DataPath
    test: DataPath | None = None
    validation: DataPath | None = None
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
    precision: Literal["auto", "fp32", "int8", "int8-only"] = "auto"


class BaseSpec(_Strict):
    """What every application spec has: a name, a task and serving settings.

    Each task has its own subclass (listed in :data:`SPECS`); ``from_dict`` picks it by the
    ``task`` key, so a tabular spec is checked against the tabular schema, and so on.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    task: str
    serve: ServeSpec = ServeSpec()
    source: Path | None = Field(default=None, exclude=True)

    @classmethod
    def from_yaml(cls, path: str | Path) -> BaseSpec:
        """Read and validate ``aiforge.yaml``; relative data paths resolve against its folder.

        Raises:
            SpecError: the file is missing, not YAML, or breaks the schema.
        """
        return load_spec(path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, base_dir: Path | None = None,
                  source: str = "<dict>") -> BaseSpec:
        """Validate a spec given as a mapping (the parsed YAML), with the schema of its task.

        Raises:
            SpecError: the task is unknown, a key is unknown or a value is of the wrong type.
        """
        if not isinstance(raw, dict):
            raise SpecError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}.")
        task = raw.get("task", "text-classification")
        target = SPECS.get(task) if isinstance(task, str) else None
        if target is None:
            guess = difflib.get_close_matches(str(task), list(SPECS), n=1)
            hint = f" Did you mean {guess[0]!r}?" if guess else ""
            raise SpecError(f"{source}: task: unknown task {task!r}.{hint} Known tasks: {', '.join(sorted(SPECS))}.")
        module, attr = target.split(":")
        spec_cls: type[BaseSpec] = getattr(importlib.import_module(module), attr)
        try:
            spec = spec_cls.model_validate({**raw, "task": task}, context={"base_dir": base_dir or Path.cwd()})
        except ValidationError as exc:
            raise SpecError(_explain(exc, source, spec_cls)) from exc
        return spec.model_copy(update={"source": Path(source) if source != "<dict>" else None})


class AppSpec(BaseSpec):
    """A text-classification application: data, backbone, training, export and serving."""

    task: Literal["text-classification"] = "text-classification"
    data: DataSpec
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    optimize: OptimizeSpec = OptimizeSpec()

    @model_validator(mode="after")
    def _test_differs_from_train(self) -> AppSpec:
        if self.data.test is not None and self.data.test == self.data.train:
            raise ValueError("data.test must not be the same file as data.train")
        return self


# task name -> "module:class" of its spec; imported lazily (a spec module must not import torch).
SPECS: dict[str, str] = {
    "text-classification": "aiforge.spec:AppSpec",
    "tabular-classification": "aiforge.tasks.tabular_spec:TabularSpec",
    "chat": "aiforge.chat.spec:ChatSpec",
    "recommendation": "aiforge.tasks.recommend_spec:RecommendSpec",
    "image-classification": "aiforge.tasks.image_spec:ImageSpec",
}


def load_spec(path: str | Path) -> BaseSpec:
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
    return BaseSpec.from_dict(raw, base_dir=p.resolve().parent, source=str(p))


def _model_at(loc: tuple[int | str, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model that owns the last key of ``loc``."""
    model: type[BaseModel] = root
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        found = [a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not found:
            return None
        model = found[0]
    return model


def _explain(exc: ValidationError, source: str, root: type[BaseModel]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            owner = _model_at(loc, root)
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
