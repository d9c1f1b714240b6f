"""Web pages: page weight (HTML + JS + CSS bytes, raw and gzipped) and the home page's time to first render.

Serves one small tabular bundle (German credit, fitted here in seconds) with ``aiforge serve`` and opens
``/`` in Debian's Chromium (Playwright) ``--runs`` times, each in a fresh browser context (cold cache):
first contentful paint (the browser's own ``paint`` entry), time until the model table is visible (the
server renders it into the HTML, so before any script ran) and time until the script has refreshed it
(``body[data-rendered]``, after ``/v1/ui/models`` answered), all from navigation start.

    python bench/web.py            # -> bench/results/web.json
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write_result
from aiforge.serve.loadgen import aiforge_server_args, free_port, start_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
HOME_FILES = ["index.html", "app.js", "home.js", "style.css"]
MODEL_FILES = ["model.html", "app.js", "md.js", "model.js", "style.css"]


def _weight(files: dict[str, bytes], names: list[str]) -> dict[str, int]:
    raw = sum(len(files[n]) for n in names)
    return {"bytes": raw, "gzip_bytes": sum(len(gzip.compress(files[n], 9)) for n in names)}


def _fetch(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from aiforge import App
    from aiforge.spec import BaseSpec

    home = Path(tempfile.mkdtemp(prefix="aiforge-bench-web-"))
    spec = {"name": "german", "task": "tabular-classification",
            "data": {"sample": "german", "sensitive_features": ["age_group", "sex"]}, "features": {"drop": ["age"]},
            "model": {"candidates": ["logistic"]}, "audit": {"bootstrap": 20}}
    app = App(BaseSpec.from_dict(spec), home=home)
    app.fit(progress=False)
    bundle = app.export().path
    port = free_port()
    proc, _ = start_server(aiforge_server_args([str(bundle)], port=port), port=port, log=home / "server.log")
    origin = f"http://127.0.0.1:{port}"
    try:
        assets = {*HOME_FILES, *MODEL_FILES} - {"index.html", "model.html"}
        files = {n: _fetch(f"{origin}/ui/static/{n}") for n in assets}
        files["index.html"] = _fetch(origin + "/")
        files["model.html"] = _fetch(origin + "/ui/models/german")
        panel = _fetch(origin + "/ui/panels/tabular-classification.js")
        files["panel.js"] = panel
        fcp: list[float] = []
        rendered: list[float] = []
        visible: list[float] = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for _ in range(args.runs + 1):  # the first run warms the server and the browser process
                context = browser.new_context()
                page = context.new_page()
                page.goto(origin + "/", wait_until="commit")
                page.wait_for_selector("[data-testid=models] tbody tr")
                visible.append(float(page.evaluate("performance.now()")))
                page.wait_for_selector("body[data-rendered='1'] [data-testid=models]")
                paint = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null")
                done = page.evaluate("performance.now()")
                fcp.append(float(paint) if paint is not None else float("nan"))
                rendered.append(float(done))
                context.close()
            browser.close()
        fcp, rendered, visible = fcp[1:], rendered[1:], visible[1:]
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    def summary(values: list[float]) -> dict[str, Any]:
        ordered = sorted(values)
        return {"median_ms": round(statistics.median(ordered), 1),
                "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1), "runs": len(ordered)}

    result = {
        "what": "aiforge web pages: weight of what the browser downloads, and the home page's first render",
        "home_page": _weight(files, HOME_FILES),
        "model_page": _weight(files, [*MODEL_FILES, "panel.js"]),
        "home_first_contentful_paint": summary(fcp),
        "home_models_visible": summary(visible),
        "home_models_rendered": summary(rendered),
        "home_models_in_first_html": b"data-model=" in files["index.html"],
        "method": f"{args.runs} cold-cache loads of / in Chromium (Playwright, {CHROMIUM}) on loopback, one tabular "
                  "bundle served; times from navigation start; first load discarded",
        "machine": machine(),
        "load_average_1m": round(os.getloadavg()[0], 1),  # the shared machine's load while measuring
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = write_result("web", result)
    print(path)
    print({k: result[k] for k in ("home_page", "model_page", "home_first_contentful_paint", "home_models_visible",
                                  "home_models_rendered", "home_models_in_first_html")})


if __name__ == "__main__":
    main()
