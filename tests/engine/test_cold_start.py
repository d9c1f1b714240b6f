"""What ``aiforge serve`` imports before it is ready: the serving stack, not the training API or the data readers.

Start-up time is measured in ``bench/serve.py`` (``ready_seconds``); this test keeps the heavy modules out of
the path, in a fresh interpreter: the CLI module, the app factory, and loading and warming up a text bundle.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from serve_helpers import server_env

# Never needed to serve a text bundle: the training stack, the data readers, the spec loader, the HTTP client.
NOT_ON_THE_SERVE_PATH = ["torch", "transformers", "onnx", "sklearn", "pandas", "pyarrow", "yaml", "httpx",
                         "aiforge.app", "aiforge.spec", "aiforge.audit", "aiforge.data"]

_CHILD = """
import json, sys
import aiforge.cli
from aiforge.serve.app import create_app
from aiforge.bundle.runtime import Runtime
create_app([sys.argv[1]])
rt = Runtime.load(sys.argv[1], threads=1)
rt.warmup()
print(json.dumps(sorted({m for m in sys.modules for w in json.loads(sys.argv[2]) if m == w or m.startswith(w + ".")})))
"""


def test_the_serve_path_imports_no_training_or_data_modules(trained_bundle: Any) -> None:
    home = Path(trained_bundle.home)
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(trained_bundle.export.path),
                           json.dumps(NOT_ON_THE_SERVE_PATH)], capture_output=True, text=True, timeout=180,
                          env=server_env(home))
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"serving a text bundle imported {loaded}"
