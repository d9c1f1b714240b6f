"""What every ``aiforge.yaml`` shares: ``BaseSpec``, the ``Strict`` base, ``DataPath``, ``ServeSpec``.

Each kind's spec (``tasks/<kind>/spec.py``) subclasses ``BaseSpec``; ``BaseSpec.from_dict`` picks
it through the kinds table by the ``task`` key. Every model forbids unknown keys; errors name the
YAML path, the file and, where one is close, the key that was probably meant.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
)

from aiforge.errors import SpecError
from aiforge.tasks.registry import get_kind, resolve

__all__ = ["BaseSpec", "DataPath", "ServeSpec", "Strict", "load_spec"]

SpecT = TypeVar("SpecT", bound="BaseSpec")


class Strict(BaseModel):
    """A frozen pydantic model that rejects unknown keys: the base of every spec block."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return (Path(base) / value).resolve() if base is not None and not value.is_absolute() else value


# A file or folder named in the spec; relative paths resolve against the YAML's folder.
DataPath = Annotated[Path, AfterValidator(_resolve_path)]


class ServeSpec(Strict):
    """Server settings used by ``aiforge serve``."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    max_batch_size: int = Field(default=64, gt=0)
    max_wait_ms: float = Field(default=5.0, ge=0)
    precision: Literal["auto", "fp32", "int8", "int8-only"] = "auto"
    # onnxruntime session settings (``aiforge optimize`` records what it chose); None: all cores, "all"
    intra_op_threads: int | None = Field(default=None, gt=0)
    graph_optimization_level: Literal["basic", "extended", "all"] | None = None


class BaseSpec(Strict):
    """What every application spec has: a name, a task, serving settings and whether to fit baselines.

    Each kind has its own subclass (its row in ``tasks/registry.py``); ``from_dict`` picks it by the
    ``task`` key, so a tabular spec is checked against the tabular schema, and so on.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    task: str
    serve: ServeSpec = ServeSpec()
    baseline: bool = Field(default=True, description="fit the kind's simple baselines beside the model "
                                                     "(audit/baseline.py); false skips them for very large data")
    source: Path | None = Field(default=None, exclude=True)

    @classmethod
    def from_yaml(cls: type[SpecT], path: str | Path) -> SpecT:
        """Read and validate ``aiforge.yaml``; relative data paths resolve against its folder.

        Raises:
            SpecError: the file is missing, not YAML, breaks the schema, or (called on a kind's
                spec class) describes another kind.
        """
        p = Path(path)
        if not p.is_file():
            raise SpecError(f"{p}: spec file not found. Pass the path of an aiforge.yaml.")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SpecError(f"{p}: not valid YAML ({exc}).") from exc
        return cls.from_dict(raw, base_dir=p.resolve().parent, source=str(p))

    @classmethod
    def from_dict(cls: type[SpecT], raw: dict[str, Any], *, base_dir: Path | None = None,
                  source: str = "<dict>") -> SpecT:
        """Validate a spec given as a mapping (the parsed YAML).

        On ``BaseSpec`` the ``task`` key picks the kind's spec class from the kinds table; on a
        kind's class (``TextSpec.from_dict``) the mapping must describe that kind, and the result
        is of that class.

        Raises:
            SpecError: the task is unknown or not this class's, a key is unknown or a value is of
                the wrong type.
        """
        if not isinstance(raw, dict):
            raise SpecError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}.")
        own = cls.model_fields["task"].default
        task = raw.get("task", own if isinstance(own, str) else "text-classification")
        spec_cls: type[SpecT] = cls
        if cls is BaseSpec:
            spec_cls = resolve(get_kind(task, where=f"{source}: task").spec)
        elif task != own:
            raise SpecError(f"{source}: task: {cls.__name__} describes {own!r} apps, got task {task!r}. "
                            "Use BaseSpec.from_dict to accept any kind.")
        try:
            spec = spec_cls.model_validate({**raw, "task": task}, context={"base_dir": base_dir or Path.cwd()})
        except ValidationError as exc:
            raise SpecError(_explain(exc, source, spec_cls)) from exc
        return spec.model_copy(update={"source": Path(source) if source != "<dict>" else None})


def load_spec(path: str | Path) -> BaseSpec:
    """Read ``aiforge.yaml`` into the spec class of its kind.

    Raises:
        SpecError: the file is missing, not YAML, or breaks the schema.
    """
    return BaseSpec.from_yaml(path)


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
