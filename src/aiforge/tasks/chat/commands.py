"""``aiforge index``, ``aiforge chat`` and ``aiforge chat-demo``: thin calls into :mod:`aiforge.tasks.chat.api`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from aiforge.options import HomeOpt

__all__ = ["register"]




def _print_turn(console: Any, question: str, turn: Any) -> None:
    console.print(f"[bold cyan]you:[/] {question}", highlight=False)
    console.print(f"[bold green]assistant[/] [dim]({turn.kind}{', ' + turn.intent if turn.intent else ''})[/]: "
                  f"{turn.text}", highlight=False, soft_wrap=True)
    for c in turn.citations:
        console.print(f"   [dim][{c['id']}] {c['source']} § {c['heading']} (chars {c['start']}-{c['end']})[/]",
                      highlight=False)


def register(app: typer.Typer) -> None:
    """Add the chat commands to the CLI."""

    @app.command("index")
    def index(
        directory: Annotated[Path | None, typer.Argument(help="Folder (or file) of Markdown, text, HTML, PDF.")] = None,
        name: Annotated[str | None, typer.Option(help="Bundle name [default: the folder's name].")] = None,
        spec: Annotated[Path | None, typer.Option(help="A task: chat aiforge.yaml (intents, retrieval…).")] = None,
        backend: Annotated[str, typer.Option(help="extractive, local or openai.")] = "extractive",
        base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible upstream (openai backend).")] = None,
        model: Annotated[str | None, typer.Option(help="Upstream model name (openai backend).")] = None,
        api_key_env: Annotated[str | None, typer.Option(help="Env variable holding the upstream key.")] = None,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
        home: HomeOpt = None,
    ) -> None:
        """Build or update a chat bundle's knowledge index (only changed files are re-embedded)."""
        from rich.console import Console

        # lazy: tokenizers/onnxruntime stay out of the CLI's start-up
        from aiforge.tasks.chat.api import index_folder
        from aiforge.tasks.chat.task import ChatTask

        result = index_folder(directory, name=name, spec_file=spec, home=home, progress=progress, backend=backend,
                              base_url=base_url, model=model, api_key_env=api_key_env)
        console = Console()
        for renderable in ChatTask().summarize(result.build, result.exported):
            console.print(renderable)
        rec = result.exported.record
        console.print(f"registered [bold]{rec.name}:{rec.version}[/] at {rec.path}")

    @app.command("chat")
    def chat(
        bundle: Annotated[str, typer.Argument(help="Chat bundle folder, NAME or NAME:VERSION.")],
        ask: Annotated[list[str] | None, typer.Option("--ask", "-a", help="Question(s); none = interactive.")] = None,
        session: Annotated[str | None, typer.Option(help="Session id to continue (kept in $AIFORGE_HOME).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON line per answer.")] = False,
        home: HomeOpt = None,
    ) -> None:
        """Ask a chat bundle questions: one-shot with --ask, or an interactive session."""
        from rich.console import Console

        # lazy: tokenizers/onnxruntime stay out of the CLI's start-up
        from aiforge.tasks.chat.api import load_chat

        rt = load_chat(bundle, home=home)
        console = Console()
        sid = rt.sessions.create(rt.name, session_id=session)  # --session continues (or starts) that one
        questions = iter(ask) if ask else None
        while True:
            if questions is not None:
                question = next(questions, None)
            else:
                try:
                    question = console.input("[bold cyan]you>[/] ")
                except (EOFError, KeyboardInterrupt):
                    question = None
            if question is None or question.strip() in ("/quit", "/exit"):
                break
            if not question.strip():
                continue
            turn = rt.ask(question, session_id=sid)
            if as_json:
                sys.stdout.write(json.dumps({"question": question, "answer": turn.text, "citations": turn.citations,
                                             "aiforge": turn.extension()}) + "\n")
            else:
                _print_turn(console, question, turn)

    @app.command("chat-demo")
    def chat_demo(home: HomeOpt = None) -> None:
        """Index aiforge's docs/ and hold a five-turn conversation (extractive, offline, under a minute)."""
        import time

        from rich.console import Console

        # lazy: tokenizers/onnxruntime stay out of the CLI's start-up
        from aiforge.tasks.chat.api import run_demo

        console = Console()
        start = time.perf_counter()
        console.print("[bold]1.[/] indexing docs/ with examples/docs-assistant/aiforge.yaml")
        result, turns = run_demo(home=home)
        s = result.build.stats
        console.print(f"    {s['files']} files, {s['chunks']} chunks ({s['embedded_chunks']} embedded, "
                      f"{s['reused_chunks']} re-used) -> {result.exported.record.name}:"
                      f"{result.exported.record.version}")
        console.print("[bold]2.[/] a five-turn conversation (one session; the third question is a follow-up)")
        for question, turn in turns:
            _print_turn(console, question, turn)
        console.print(f"done in {time.perf_counter() - start:.1f} s. Serve it: aiforge serve docs-assistant"
                      + (f" --home {home}" if home else ""))
