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

_HEAVY_TRAIN = "trains a full application (minutes on 2 cores); its bundle is built by the kind's own tests"
# command -> why this test does not run it (the commands after a heavy one depend on its bundle)
NOT_RUN: dict[str, str] = {
    "make demo": "installs the venv and trains a model: what this whole test suite checks piece by piece",
    "make test": "runs this test suite itself",
    ".venv/bin/aiforge train examples/banking77/aiforge.yaml": _HEAVY_TRAIN + " (~40 s idle, 13k texts)",
    '.venv/bin/aiforge predict banking77 "I still have not received my card"': "needs the banking77 bundle",
    "printf 'text\\nI still have not received my card\\nhow do I top up with apple pay?\\n' > queries.csv":
        "only feeds the next command, which needs the banking77 bundle",
    ".venv/bin/aiforge predict banking77 --input queries.csv > predictions.jsonl": "needs the banking77 bundle",
    ".venv/bin/aiforge eval banking77 --data ../shared/data/banking77/test.csv -o metrics.json":
        "needs the banking77 bundle",
    ".venv/bin/aiforge registry list": "in the banking77 block: lists the bundle that block needs",
    ".venv/bin/aiforge registry show banking77:1": "needs the banking77 bundle",
    ".venv/bin/aiforge serve banking77 --port 8000": "needs the banking77 bundle",
    """curl -s localhost:8000/v1/models/banking77/predict -d '{"inputs": ["where is my card?"], "top_k": 3}'""":
        "needs the banking77 server",
    """curl -s localhost:8000/v2/models/banking77/infer -d '{"inputs": [{"name": "text", "shape": [1], """
    """"datatype": "BYTES", "data": ["where is my card?"]}]}'""": "needs the banking77 server",
    ".venv/bin/aiforge bench banking77 --concurrency 1,8,64 --duration 20 -o bench.json":
        "60 s of load by design, and needs the banking77 bundle",
    ".venv/bin/aiforge train examples/adult-income/aiforge.yaml": _HEAVY_TRAIN + " (boosted trees, 3 mitigations)",
    ".venv/bin/aiforge sample-data adult data/ && .venv/bin/aiforge audit adult-income --data data/test.csv":
        "the audit needs the adult-income bundle",
    ".venv/bin/aiforge ship examples/adult-income/aiforge.yaml": _HEAVY_TRAIN,
    ".venv/bin/aiforge ship banking77 --data ../shared/data/banking77/test.csv --gate min_accuracy=0.9 "
    "--gate max_size_mb=200": "needs the banking77 bundle",
    ".venv/bin/aiforge train examples/fashion-mnist/aiforge.yaml": _HEAVY_TRAIN + " (~400 s, 60k images)",
    ".venv/bin/aiforge predict fashion-mnist shoe.png": "needs the fashion-mnist bundle and a shoe.png",
    "curl -F files=@shoe.png http://127.0.0.1:8000/v1/models/fashion-mnist/classify": "needs that server",
    ".venv/bin/python -m pytest -q tests/engine/test_layout.py tests/engine/test_kinds_contract.py":
        "those tests run in the suite already",
    "aiforge train examples/adult-income/aiforge.yaml": _HEAVY_TRAIN,
    "aiforge audit adult-income --data /tmp/adult/test.csv": "needs the adult-income bundle",
    "aiforge ship examples/german-credit/aiforge.yaml": _HEAVY_TRAIN + " (trains, audits and gates German credit)",
    "aiforge serve adult-income": "needs the adult-income bundle",
    """curl -s localhost:8000/v1/models/adult-income/predict -d '{"inputs": [{"age": 39, "workclass": "State-gov", """
    """"education": "Bachelors", "education_num": 13, "marital_status": "Never-married", "occupation": """
    """"Adm-clerical", "relationship": "Not-in-family", "capital_gain": 2174, "capital_loss": 0, "hours_per_week":"""
    """ 40, "native_country": "United-States", "sex": "Male"}]}'""": "needs the adult-income server",
    "aiforge train examples/movielens/aiforge.yaml": _HEAVY_TRAIN + " (compares 7 recommenders on MovieLens)",
    'aiforge recommend movielens --user 15 -k 5 --filter \'{"genres": "Comedy"}\'': "needs the movielens bundle",
    "aiforge recommend movielens --item 318 --item 296": "needs the movielens bundle",
    "aiforge similar movielens 318 -k 5": "needs the movielens bundle",
    "aiforge serve movielens": "needs the movielens bundle",
    """curl -d '{"user": "15", "k": 5, "filter": {"year": {"min": 1990}}}' """
    "localhost:8000/v1/models/movielens/recommend": "needs the movielens server",
    """curl -d '{"item": "318", "k": 5}' localhost:8000/v1/models/movielens/similar""": "needs the movielens server",
    '.venv/bin/aiforge train examples/highway-kinematics/aiforge.yaml':
        _HEAVY_TRAIN + " (behaviour cloning + DAgger in the simulator)",
    '.venv/bin/aiforge drive highway-kinematics --episodes 10':
        "needs the highway-kinematics bundle (or its server)",
    'aiforge train bench/qa/pygame.yaml':
        _HEAVY_TRAIN + " (indexes 16 pages of pygame's reference with the reranker)",
    'aiforge eval pygame-docs --data bench/qa/pygame.jsonl':
        "needs the pygame-docs bundle",
    '.venv/bin/aiforge drive highway-kinematics --episodes 5':
        "needs the highway-kinematics bundle (or its server)",
    '.venv/bin/aiforge eval highway-kinematics --data examples/highway-kinematics/eval.yaml':
        "needs the highway-kinematics bundle (or its server)",
    '.venv/bin/aiforge ship highway-kinematics':
        "needs the highway-kinematics bundle (or its server)",
    '.venv/bin/aiforge serve highway-kinematics &':
        "needs the highway-kinematics bundle (or its server)",
    'sleep 5':
        "needs the highway-kinematics bundle (or its server)",
    "curl -s http://127.0.0.1:8000/v1/models/highway-kinematics/act -H 'content-type: application/json' -d '"
    '{"observation": [[1,100,4,25,0,1,0],[1,12,0,-8,0,1,0],[0,0,0,0,0,0,0],[0,0,0,0,0,0,0],'
    '[0,0,0,0,0,0,0],[0,0,0,0,0,0,0],[0,0,0,0,0,0,0]]}\'':
        "needs the highway-kinematics bundle (or its server)",
    'kill %1':
        "needs the highway-kinematics bundle (or its server)",
    'aiforge audit adult-income --data /tmp/adult/test.csv --sensitive sex':
        "needs the adult-income bundle",
    'aiforge ship adult-income --gate max_demographic_parity_difference=0.05 --gate decide=point':
        "needs the adult-income bundle",
    '.venv/bin/aiforge train examples/german-credit/aiforge.yaml':
        _HEAVY_TRAIN + " (the playground's tabular example)",
    '.venv/bin/aiforge index docs --name docs-assistant':
        "replaces the demo's bundle; the playground block is run by tests/web",
    '.venv/bin/aiforge serve german-credit docs-assistant --port 8000 & SERVER=$!':
        "needs the german-credit and docs-assistant bundles (or their server)",
    'until curl -sf http://127.0.0.1:8000/v2/health/ready; do sleep 1; done; echo':
        "needs the german-credit and docs-assistant bundles (or their server)",
    'curl -s http://127.0.0.1:8000/ | head -c 200; echo':
        "needs the german-credit and docs-assistant bundles (or their server)",
    'curl -s http://127.0.0.1:8000/v1/ui/models | head -c 300; echo':
        "needs the german-credit and docs-assistant bundles (or their server)",
    'curl -s http://127.0.0.1:8000/v1/ui/stats; echo':
        "needs the german-credit and docs-assistant bundles (or their server)",
    'kill $SERVER':
        "needs the german-credit and docs-assistant bundles (or their server)",
    'AIFORGE_WEB_SHOTS=/tmp/aiforge-shots .venv/bin/python -m pytest -q tests/web':
        "runs a part of this test suite",
    '.venv/bin/python bench/web.py':
        "a benchmark (bench/), not a test",
    "pip install 'aiforge[ray]'":
        "make install installs the ray extra already (requirements-dev.txt); no network here",
    'aiforge train examples/banking77/aiforge.yaml':
        _HEAVY_TRAIN + " (~40 s idle, 13k texts)",
    'aiforge serve banking77 --backend ray --replicas 2 --port 8000':
        "needs the banking77 bundle (tests/scale runs the same on a two-node Ray cluster)",
    'aiforge serve banking77 --backend ray --autoscale 1:4 --ray-address auto':
        "needs the banking77 bundle (tests/scale runs the same on a two-node Ray cluster)",
    "aiforge batch banking77 --input 'texts/*.csv' --output out/ --backend ray --actors 2":
        "needs the banking77 bundle (tests/scale runs the same on a two-node Ray cluster)",
    'aiforge batch banking77 --input texts.jsonl --output out-local/':
        "needs the banking77 bundle (tests/scale runs the same on a two-node Ray cluster)",
    'aiforge deploy banking77 --target kuberay -o deploy-banking77 --replicas 2 --workers 2':
        "needs the banking77 bundle (tests/scale runs the same on a two-node Ray cluster)",
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
    return [(b.file, [c for c in b.commands if c not in NOT_RUN]) for b in doc_blocks()]


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


def _workdir(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    for name in ("docs", "examples"):
        shutil.copytree(REPO / name, repo / name)
    shutil.copy(REPO / "README.md", repo / "README.md")
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(Path(os.environ.get("AIFORGE_SHARED_DATA", REPO.parent / "shared" / "data")))
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
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


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_documented_commands_run_in_order_on_a_fresh_home(tmp_path: Path, chat_cache: Path) -> None:
    repo = _workdir(tmp_path)
    env = dict(os.environ, AIFORGE_HOME=str(tmp_path / "home"), AIFORGE_CACHE=str(chat_cache), HF_HUB_OFFLINE="1",
               PATH=f"{repo / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               TOKENIZERS_PARALLELISM="false")
    ran: list[str] = []
    for file, commands in _run_list():
        servers: list[tuple[subprocess.Popen[bytes], int]] = []
        ports: dict[str, str] = {}
        try:
            for command in commands:
                for old, new in ports.items():
                    command = command.replace(f"localhost:{old}", f"localhost:{new}")
                if re.match(r"^(\.venv/bin/)?aiforge serve ", command):
                    port = free_port()
                    given = re.search(r"--port (\d+)", command)
                    ports[given.group(1) if given else "8000"] = str(port)
                    command = re.sub(r" --port \d+", "", command) + f" --port {port} --no-access-log"
                    proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=repo, env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    servers.append((proc, port))
                    _wait_ready(port, proc)
                    ran.append(command)
                    continue
                if _same(command) in {_same(c) for c in ran}:  # an earlier block ran it in this working copy
                    continue
                started = time.monotonic()
                done = subprocess.run(["bash", "-c", command], cwd=repo, env=env, capture_output=True, text=True,
                                      timeout=600)
                print(f"{time.monotonic() - started:7.1f} s  {file}: {command}")  # shown when the test fails
                out = done.stdout + done.stderr
                assert done.returncode == 0 and "Traceback" not in out, f"{file}: {command}\n{out[-3000:]}"
                ran.append(command)
                if " chat " in command and "--ask" in command:
                    assert "I don't know" not in done.stdout, out
                if "chat-demo" in command:  # the demo's first turn, "Hello!", is answered by the greet intent
                    lines = done.stdout.splitlines()
                    asked = next(i for i, line in enumerate(lines) if line.startswith("you:") and "Hello" in line)
                    reply = " ".join(lines[asked + 1:asked + 3])
                    assert "assistant" in reply and "I don't know" not in reply, out[-2000:]
            for _, port in servers:  # a served chat model answers the OpenAI call the docs show
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30)
                assert r.status_code == 200 and r.json()["data"], r.text
        finally:
            for proc, _ in servers:
                proc.terminate()
                proc.wait(timeout=30)
    assert len(ran) >= 8, ran
