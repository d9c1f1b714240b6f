"""The chat Python API the CLI calls: index a folder, load a chat bundle, run the docs-assistant demo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiforge.bundle.parts import ExportResult
from aiforge.bundle.registry import Registry
from aiforge.bundle.runtime import Runtime
from aiforge.errors import AiforgeError, SpecError
from aiforge.spec import load_spec
from aiforge.tasks.chat.build import build_chat, index_spec
from aiforge.tasks.chat.export import export_chat
from aiforge.tasks.chat.fitted import ChatFitResult
from aiforge.tasks.chat.runtime import ChatRuntime, ChatTurn
from aiforge.tasks.chat.spec import ChatSpec

__all__ = ["DEMO_QUESTIONS", "IndexResult", "demo_spec", "index_folder", "load_chat", "run_demo"]


# The demo conversation: a greeting, two questions, a follow-up and one the docs cannot answer.
DEMO_QUESTIONS = [
    "Hello!",
    "What does the server do when its queue is full?",
    "And what happens when a request takes too long?",
    "How are API keys stored?",
    "What is the capital of Peru?",
]


@dataclass(frozen=True)
class IndexResult:
    """A registered chat bundle and the build statistics (files added, changed, re-used chunks…)."""

    exported: ExportResult
    build: ChatFitResult


def index_folder(directory: str | Path | None = None, *, name: str | None = None, spec_file: str | Path | None = None,
                 home: str | Path | None = None, progress: bool = True, **generation: Any) -> IndexResult:
    """Build (or update) a chat bundle over ``directory`` or as ``spec_file`` says, and register it.

    Files whose sha256 did not change since the bundle's previous version keep their chunks and vectors.

    Raises:
        SpecError: neither a folder nor a spec was given, or the spec is invalid.
        DataError: the folder is missing or holds nothing to index.
    """
    if spec_file is not None:
        spec = load_spec(spec_file)
        if not isinstance(spec, ChatSpec):
            raise SpecError(f"{spec_file}: task is {spec.task!r}; aiforge index needs task: chat.")
        if directory is not None or name is not None:
            raw = spec.model_dump(mode="json", exclude={"source"})
            if directory is not None:
                raw["knowledge"]["paths"] = [str(Path(directory).resolve())]
            if name is not None:
                raw["name"] = name
            spec = ChatSpec.from_dict(raw, source=str(spec_file))
    elif directory is not None:
        spec = index_spec(directory, name=name or Path(directory).resolve().name or "docs", **generation)
    else:
        raise SpecError("give a folder to index or --spec aiforge.yaml.")
    registry = Registry(home)
    build = build_chat(spec, registry=registry, progress=progress)
    return IndexResult(export_chat(build, registry), build)


def load_chat(bundle: str | Path, *, home: str | Path | None = None) -> ChatRuntime:
    """A chat bundle's runtime.

    Raises:
        AiforgeError: the bundle is not a chat bundle (or cannot be loaded).
    """

    rt = Runtime.load(bundle, home=home)
    if not isinstance(rt, ChatRuntime):
        raise AiforgeError(f"{bundle}: a {rt.manifest.task} bundle, not a chat bundle.")
    return rt


def demo_spec() -> Path:
    """The docs-assistant example spec of this checkout.

    Raises:
        SpecError: the example folder is not there (an installed package without the repository).
    """
    path = Path(__file__).resolve().parents[4] / "examples" / "docs-assistant" / "aiforge.yaml"
    if not path.is_file():
        raise SpecError(f"{path}: the docs-assistant example is not here; run the demo from a checkout.")
    return path


def run_demo(*, home: str | Path | None = None, questions: list[str] | None = None,
             progress: bool = False) -> tuple[IndexResult, list[tuple[str, ChatTurn]]]:
    """Index aiforge's docs/ with the example spec, then hold a five-turn conversation in one session."""
    result = index_folder(spec_file=demo_spec(), home=home, progress=progress)
    rt = load_chat(result.exported.path)
    session = rt.sessions.create(rt.name)
    turns = [(q, rt.ask(q, session_id=session)) for q in (questions or DEMO_QUESTIONS)]
    rt.sessions.delete(session)
    return result, turns
