"""Every shell command block of README.md and docs/*.md, pasted as a newcomer would.

The blocks are read from the files themselves. Each command is either run, in order, in one
fresh working copy (docs/, examples/, README.md copied; ``../shared/data`` linked to
``$AIFORGE_SHARED_DATA``; ``.venv/bin/aiforge`` and ``aiforge`` run this checkout) on a fresh
``AIFORGE_HOME``, or listed in ``NOT_RUN`` with the reason: nothing is left out silently, and a
``NOT_RUN`` entry that no longer appears in the docs fails the table test. ``aiforge serve``
lines are started in the background (on a free port: ``--port N`` and ``localhost:N`` are
rewritten) and stopped at the end of their block; the encoder export is the session's
(``AIFORGE_CACHE``), as on a machine that has run ``make demo`` once.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from aiforge.serve.loadgen import free_port

REPO = Path(__file__).resolve().parents[2]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_RAY = ("starts a Ray cluster of its own (tens of seconds and GBs of memory); tests/scale runs the same command on "
        "a two-node local Ray cluster")
# Commands whose example was made cheap (capped data, fewer candidates and episodes) but that did not finish a
# run of this test on the session's machine (2 cores at load 20+: a capped training took > 15 min there). Delete
# an entry to run it; each is meant to run here on an idle machine.
# command -> why this test does not run it. Everything else in README.md and docs/*.md runs, in order.
NOT_RUN: dict[str, str] = {
    "make demo":
        "creates .venv and installs the pinned packages (needs the network), then runs aiforge demo "
        "(tests/text/test_demo.py), chat-demo and drive-demo (both run here, from the README)",
    "make test":
        "runs this test suite itself",
    ".venv/bin/python -m pytest -q tests/engine/test_layout.py tests/engine/test_kinds_contract.py":
        "those tests run in the suite already",
    "AIFORGE_WEB_SHOTS=/tmp/aiforge-shots .venv/bin/python -m pytest -q tests/web":
        "runs a part of this test suite",
    ".venv/bin/python bench/web.py":
        "a benchmark (bench/), run by make bench, not a test",
    "pip install 'aiforge[ray]'":
        "installs from the package index (the network); make install installs the ray extra",
    "aiforge serve banking77 --backend ray --replicas 2 --port 8000":
        _RAY,
    "aiforge serve banking77 --backend ray --ray-ingress haproxy --replica-cpus 2 --port 8000":
        _RAY + "; tests/scale/test_ray_serve_haproxy.py (make test-heavy) starts this ingress through the CLI",
    "aiforge serve banking77 --backend ray --autoscale 1:4 --ray-address auto":
        "joins a Ray cluster that is already running (--ray-address auto), which a fresh machine has not",
    "aiforge batch banking77 --input 'texts/*.csv' --output out/ --backend ray --actors 2":
        _RAY + "; its texts/*.csv are the reader's own files",
}


@dataclass(frozen=True)
class Block:
    file: str
    commands: list[str]


def _commands(body: str) -> list[str]:
    """The commands of a block: lines continued by a backslash or inside an open quote joined, comments
    (after two spaces, or alone on a line) dropped."""
    out: list[str] = []
    pending = ""
    for raw in body.splitlines():
        line = raw.rstrip() if pending.count("'") % 2 else re.sub(r"\s{2,}#.*$", "", raw).rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        joined = pending + line.strip()
        if joined.endswith("\\"):
            pending = joined[:-1].rstrip() + " "
        elif joined.count("'") % 2:
            pending = joined + " "
        else:
            out.append(joined)
            pending = ""
    return out


def doc_blocks() -> list[Block]:
    blocks = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"^```(bash|sh|shell|console)\n(.*?)^```", text, re.S | re.M):
            blocks.append(Block(path.name, _commands(m.group(2))))
    return blocks


def _run_list() -> list[tuple[str, list[str]]]:
    """Each block's commands less those in NOT_RUN (and its ``kill`` line when its server is not started)."""
    out = []
    for b in doc_blocks():
        served = any(_SERVE.match(c) and c not in NOT_RUN for c in b.commands)
        out.append((b.file, [c for c in b.commands if c not in NOT_RUN and (served or not _KILL.match(c))]))
    return out


def test_every_documented_command_is_run_or_listed_with_a_reason() -> None:
    commands = [c for b in doc_blocks() for c in b.commands]
    assert len(commands) >= 30, "the parser found the docs' command blocks"
    stale = sorted(set(NOT_RUN) - set(commands))
    assert not stale, f"NOT_RUN names commands the docs no longer have: {stale}"
    ran = [c for _, cs in _run_list() for c in cs]
    assert any(c.startswith(".venv/bin/aiforge index") for c in ran) and any("chat-demo" in c for c in ran)


def _same(command: str) -> str:
    """A command as run: ``.venv/bin/aiforge`` and ``aiforge`` are the same program here."""
    return re.sub(r"^\.venv/bin/", "", command)


def workdir(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    for name in ("docs", "examples", "bench/qa"):
        shutil.copytree(REPO / name, repo / name)
    shutil.copy(REPO / "README.md", repo / "README.md")
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(Path(os.environ.get("AIFORGE_SHARED_DATA", REPO.parent / "shared" / "data")))
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"  # a script, not a link: a link outside the venv would start Python without it
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    wrapper = bin_dir / "aiforge"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m aiforge.cli "$@"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    return repo


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("the server never became ready")


_SERVE = re.compile(r"^(?P<cmd>(\.venv/bin/)?aiforge serve .*?)(?P<bg>\s*&(\s*SERVER=\$!)?)?$")
_KILL = re.compile(r"^kill (%1|\$SERVER)$")


def _start_server(command: str, repo: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int, str]:
    """Start an ``aiforge serve`` line in the background on a free port; (process, port, the port it named)."""
    port = free_port()
    given = re.search(r"--port (\d+)", command)
    command = re.sub(r" --port \d+", "", command) + f" --port {port} --no-access-log"
    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_ready(port, proc)
    return proc, port, given.group(1) if given else "8000"


def _stop(servers: list[tuple[subprocess.Popen[bytes], int]]) -> None:
    for proc, _ in servers:
        proc.terminate()
        proc.wait(timeout=30)
    servers.clear()


def run_blocks(blocks: list[tuple[str, list[str]]], repo: Path, env: dict[str, str]) -> list[tuple[float, str]]:
    """Run each block's commands in order in ``repo``; (seconds, command) of each. Fails at the first error."""
    ran: list[str] = []
    times: list[tuple[float, str]] = []
    for file, commands in blocks:
        servers: list[tuple[subprocess.Popen[bytes], int]] = []
        ports: dict[str, str] = {}
        try:
            for command in commands:
                for old, new in ports.items():
                    command = command.replace(f"localhost:{old}", f"localhost:{new}")
                    command = command.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
                serve = _SERVE.match(command)
                if serve:  # in the background, whether the line ends in '&' or not (the docs' next lines curl it)
                    started = time.monotonic()
                    proc, port, named = _start_server(serve.group("cmd"), repo, env)
                    servers.append((proc, port))
                    ports[named] = str(port)
                    times.append((time.monotonic() - started, f"{file}: {command}"))
                    ran.append(command)
                    continue
                if _KILL.match(command):  # the block stops the server it started
                    assert servers, f"{file}: {command} with no server running"
                    _stop(servers)
                    ran.append(command)
                    continue
                if _same(command) in {_same(c) for c in ran}:  # an earlier block ran it in this working copy
                    continue
                started = time.monotonic()
                done = subprocess.run(["bash", "-c", command], cwd=repo, env=env, capture_output=True, text=True,
                                      timeout=2400)
                times.append((time.monotonic() - started, f"{file}: {command}"))
                print(f"{times[-1][0]:7.1f} s  {file}: {command}", flush=True)  # shown when the test fails
                out = done.stdout + done.stderr
                assert done.returncode == 0 and "Traceback" not in out, f"{file}: {command}\n{out[-3000:]}"
                ran.append(command)
                if command.startswith("curl "):  # every documented call answers JSON or a page, never an error
                    assert '"error"' not in done.stdout, f"{file}: {command}\n{out[-2000:]}"
                if " chat " in command and "--ask" in command:
                    assert "I don't know" not in done.stdout, out
                if "chat-demo" in command:  # the demo's first turn, "Hello!", is answered by the greet intent
                    lines = done.stdout.splitlines()
                    asked = next(i for i, line in enumerate(lines) if line.startswith("you:") and "Hello" in line)
                    reply = " ".join(lines[asked + 1:asked + 3])
                    assert "assistant" in reply and "I don't know" not in reply, out[-2000:]
            for _, port in servers:  # a server still up at the block's end answers the model list
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30)
                assert r.status_code == 200 and r.json()["data"], r.text
        finally:
            _stop(servers)
    return times


def docs_env(repo: Path, home: Path, cache: Path) -> dict[str, str]:
    """The environment the commands run in: this checkout as ``aiforge``, a fresh home, the encoder cache."""
    return dict(os.environ, AIFORGE_HOME=str(home), AIFORGE_CACHE=str(cache), HF_HUB_OFFLINE="1",
                PATH=f"{repo / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
                PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
                TOKENIZERS_PARALLELISM="false")


@pytest.mark.slow
@pytest.mark.docs
@pytest.mark.timeout(3000)
def test_the_documented_commands_run_in_order_on_a_fresh_home(tmp_path: Path, chat_cache: Path) -> None:
    repo = workdir(tmp_path)
    times = run_blocks(_run_list(), repo, docs_env(repo, tmp_path / "home", chat_cache))
    total = sum(t for t, _ in times)
    print(f"{total:7.1f} s  in all; slowest: " + "; ".join(f"{t:.1f} s {c}" for t, c in sorted(times)[::-1][:8]))
    assert len(times) >= 40, times
