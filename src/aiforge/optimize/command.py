"""``aiforge optimize NAME``: sweep a bundle's serving settings, write the Pareto table, register the winner.

See :mod:`aiforge.optimize.sweep` for what is measured. The new version is the old one's files with
the chosen recipe's graphs, its ``pipeline.json`` pointing at them, and the spec's ``serve`` block
recording ``precision``, ``max_batch_size``, ``max_wait_ms``, ``intra_op_threads`` and
``graph_optimization_level`` (``aiforge serve`` and the runtime read them), plus ``pareto.json`` and
``pareto.csv``. No version is registered when no row reaches the agreement gate.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiforge.bundle.format import BundleManifest, read_manifest
from aiforge.bundle.registry import Registry
from aiforge.bundle.runtime import ItemLimits, Runtime
from aiforge.errors import AiforgeError, RegistryError
from aiforge.optimize.hooks import Candidate, OptimizeHooks
from aiforge.optimize.pareto import choose, mark_pareto, write_table
from aiforge.optimize.sweep import GraphMeasure, Stopwatch, SweepGrid, candidate_row, measure_graph, serve_load
from aiforge.progress import progress_bar
from aiforge.tasks.registry import get_kind, kind_names, resolve

__all__ = ["OptimizeResult", "optimize_bundle"]


@dataclass(frozen=True)
class OptimizeResult:
    """What the sweep measured and what it registered."""

    rows: list[dict[str, Any]]
    chosen: dict[str, Any] | None
    name: str
    version: str | None  # the new version (None: nothing passed the gate)
    table_json: Path
    table_csv: Path
    elapsed_s: float
    stopped_early: bool
    min_agreement: float


def _stage(bundle: Path, pipeline: dict[str, Any], cand: Candidate, dst: Path) -> Path:
    """A folder the runtime can open: the bundle's files linked, the candidate's graphs in the pipeline."""
    dst.mkdir(parents=True)
    for item in bundle.iterdir():
        if item.name != "pipeline.json" and item.is_file():
            (dst / item.name).symlink_to(item.resolve())
    graphs = dict(pipeline["graphs"])
    for key, path in cand.graphs.items():
        if not (dst / path.name).exists():
            (dst / path.name).symlink_to(path.resolve())
        graphs[key] = path.name
    (dst / "pipeline.json").write_text(json.dumps({**pipeline, "graphs": graphs}), encoding="utf-8")
    return dst


def _size_mb(bundle: Path, pipeline: dict[str, Any], cand: Candidate) -> float:
    """Size of the graph(s) the candidate's precision runs (an int8 guard's fp32 graph included)."""
    graphs = {k: bundle / v for k, v in pipeline["graphs"].items()} | cand.graphs
    keys = {"fp32"} if cand.precision == "fp32" else {"int8"} | ({"fp32"} if cand.precision == "int8" and
                                                                  pipeline.get("int8_fallback") else set())
    total: int = sum(Path(graphs[k]).stat().st_size for k in keys if k in graphs)
    return total / 1e6


def _hooks(manifest: BundleManifest) -> OptimizeHooks:
    kind = get_kind(manifest.task)
    if not kind.optimize:
        have = [k for k in kind_names() if get_kind(k).optimize]
        raise AiforgeError(f"aiforge optimize: {manifest.task} bundles have no precision recipes or batching "
                           f"to sweep; it works for {', '.join(have)} bundles.")
    hooks: OptimizeHooks = resolve(kind.optimize)
    return hooks


def _register(registry: Registry, bundle: Path, manifest: BundleManifest, pipeline: dict[str, Any],
              cand: Candidate, row: dict[str, Any], rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    graphs = dict(pipeline["graphs"])
    replaced = set()
    for key, path in cand.graphs.items():
        replaced.add(graphs.get(key))
        graphs[key] = path.name
    with registry.staging() as staged:
        for item in bundle.iterdir():
            if item.is_file() and item.name not in {"manifest.json", "pipeline.json", "pareto.json",
                                                    "pareto.csv"} and not (item.name in replaced and
                                                                           item.name not in graphs.values()):
                shutil.copy2(item, staged / item.name)
        for path in cand.graphs.values():
            shutil.copy2(path, staged / path.name)
        new_pipeline = {**pipeline, "graphs": graphs}
        if cand.precision in graphs:
            new_pipeline["default_precision"] = cand.precision
        (staged / "pipeline.json").write_text(json.dumps(new_pipeline, indent=2), encoding="utf-8")
        write_table(rows, staged, meta=meta)
        extra = copy.deepcopy(manifest.extra)
        serve = extra.setdefault("spec", {}).setdefault("serve", {})
        serve.update({"precision": cand.precision, "intra_op_threads": row["intra_op_threads"],
                      "graph_optimization_level": row["graph_optimization_level"]})
        if row.get("max_batch_size") is not None:
            serve.update({"max_batch_size": row["max_batch_size"], "max_wait_ms": row["max_wait_ms"]})
        extra["optimize"] = {"from_version": manifest.version, "recipe": cand.recipe, "details": cand.details,
                             "chosen": {k: row.get(k) for k in row if k not in ("pareto", "chosen")},
                             "table": ["pareto.json", "pareto.csv"], **meta}
        try:
            metrics = registry.get(manifest.name, manifest.version).metrics
        except RegistryError:
            metrics = {}
        added = registry.add(staged, name=manifest.name, task=manifest.task, extra=extra, metrics=metrics)
    return str(added.record.version)


def optimize_bundle(bundle: str, *, version: str | None = None, budget_s: float = 120.0, home: str | Path | None = None,
                    data: Path | None = None, min_agreement: float | None = None, grid: SweepGrid | None = None,
                    parity_limit: int = 2000, register: bool = True, progress: bool = True,
                    out: Path | None = None) -> OptimizeResult:
    """Sweep ``bundle`` within ``budget_s`` seconds; register the best row that passes the gate.

    ``min_agreement`` may only raise the bundle's own gate (``optimize.min_int8_agreement``).

    Raises:
        AiforgeError: the kind has nothing to sweep, the parity data cannot be read, or the budget
            ran out before the fp32 graph was measured.
    """
    grid = grid or SweepGrid()
    serving_share = 0.35 if grid.batch_sizes and grid.waits_ms else 0.0  # of the budget kept for phase 2
    watch = Stopwatch(budget_s)
    registry = Registry(home)
    path = registry.resolve(bundle, version)
    manifest = read_manifest(path)
    hooks = _hooks(manifest)
    gate = float(((manifest.extra.get("spec") or {}).get("optimize") or {}).get("min_int8_agreement", 0.99))
    gate = max(gate, min_agreement or 0.0)
    pipeline: dict[str, Any] = json.loads((path / "pipeline.json").read_text(encoding="utf-8"))
    runtime_cls: type[Runtime] = resolve(get_kind(manifest.task).runtime)
    raw = hooks.parity_items(bundle=path, manifest=manifest, data=data, limit=parity_limit)
    limits = ItemLimits(max_inputs=len(raw) + 1, max_text_chars=1 << 30, max_image_bytes=1 << 30,
                        max_image_pixels=1 << 40)
    rows: list[dict[str, Any]] = []
    graph_rows: list[tuple[dict[str, Any], Path, Candidate]] = []
    reference = None
    stopped = False
    with tempfile.TemporaryDirectory(prefix="aiforge-optimize-") as tmp:
        work = Path(tmp)
        items = runtime_cls.open(path, manifest, precision="fp32", threads=1).parse_items(raw, "parity", limits)
        timing = (items * (grid.timing_items // max(1, len(items)) + 1))[:grid.timing_items]
        n_graph = len(grid.levels) * len(grid.threads)
        total = 7 * n_graph * (1 + len(grid.batch_sizes) * len(grid.waits_ms))  # an upper bound: 7 recipes
        with progress_bar(total, "optimize", enabled=progress) as advance:
            # every recipe at the serving default first (all optimizations, most threads), then the rest
            first = (grid.levels[-1], grid.threads[-1])
            settings = [first] + [(lv, th) for lv in grid.levels for th in grid.threads if (lv, th) != first]
            scored: dict[tuple[int, str], GraphMeasure] = {}
            cands: list[Candidate] = []

            def measure(i: int, cand: Candidate, level: str, threads: int) -> None:
                nonlocal reference
                folder = _stage(path, pipeline, cand, work / f"c{i}-{level}-{threads}")

                def opener() -> Runtime:
                    return runtime_cls.open(folder, manifest, precision=cand.precision, threads=threads)

                known = scored.get((i, level))
                _, probs, measured = measure_graph(opener, items if known is None else timing[:1], timing,
                                                   reference=reference if known is None else None)
                if known is None:
                    reference = probs if reference is None else reference
                    scored[(i, level)] = measured
                else:  # results do not depend on the thread count: keep the scored agreement
                    measured = GraphMeasure(known.agreement, known.max_abs_prob_diff, measured.offline_items_per_s,
                                            measured.rss_mb)
                row = candidate_row(cand, level=level, threads=threads, graph=measured,
                                    size_mb=_size_mb(path, pipeline, cand), min_agreement=gate)
                rows.append(row)
                graph_rows.append((row, folder, cand))
                advance(1, info=f"{cand.recipe} {level} x{threads}: {row['offline_items_per_s']:.0f}/s, "
                                f"agreement {row['agreement_with_fp32']:.4f}")

            offered = hooks.candidates(bundle=path, pipeline=pipeline, work=work)
            while True:
                if watch.left() <= serving_share * budget_s and cands:
                    stopped = True
                    break
                cand = next(offered, None)  # builds it (fusing, quantizing): seconds
                if cand is None:
                    break
                cands.append(cand)
                measure(len(cands) - 1, cand, *first)
            for level, threads in settings[1:]:
                for i, cand in enumerate(cands):
                    if watch.left() <= serving_share * budget_s:
                        stopped = True
                        break
                    measure(i, cand, level, threads)
            if not rows:
                raise AiforgeError(f"aiforge optimize: the budget ({budget_s:g}s) ran out before the fp32 graph "
                                   "was measured; give a larger --budget.")
            lo, hi = grid.concurrencies
            passing = sorted((g for g in graph_rows if g[0]["gate"] == "pass"),
                             key=lambda g: -g[0]["offline_items_per_s"])
            for row, folder, cand in passing:
                if watch.left() <= 0:
                    stopped = True
                    break
                rt = runtime_cls.open(folder, manifest, precision=cand.precision, threads=row["intra_op_threads"])
                for batch in grid.batch_sizes:
                    for wait in grid.waits_ms:
                        if watch.left() <= 0:
                            stopped = True
                            break
                        few = serve_load(rt, timing[:max(8, len(timing) // 4)], concurrency=lo,
                                         max_batch_size=batch, max_wait_ms=wait)
                        many = serve_load(rt, timing, concurrency=hi, max_batch_size=batch, max_wait_ms=wait)
                        served = {**row, "max_batch_size": batch, "max_wait_ms": wait,
                                  "lo_items_per_s": round(few.items_per_s, 1), "lo_p50_ms": round(few.p50_ms, 2),
                                  "lo_p99_ms": round(few.p99_ms, 2), "hi_items_per_s": round(many.items_per_s, 1),
                                  "hi_p50_ms": round(many.p50_ms, 2), "hi_p99_ms": round(many.p99_ms, 2)}
                        rows.append(served)
                        graph_rows.append((served, folder, cand))
                        advance(1, info=f"{cand.recipe} batch {batch} wait {wait:g}: c{hi} {many.items_per_s:.0f}/s")
                del rt
        mark_pareto(rows)
        best = choose(rows)
        meta = {"bundle": f"{manifest.name}:{manifest.version}", "budget_s": budget_s,
                "elapsed_s": round(watch.elapsed, 1), "stopped_early": stopped, "min_agreement": gate,
                "parity_items": len(items), "timing_items": len(timing), "concurrencies": [lo, hi],
                "load": "in-process: concurrent clients sending one item each through the server's Batcher "
                        "(no HTTP)"}
        new_version = None
        if best is not None and register:
            cand = next(c for r, _, c in graph_rows if r is best)
            new_version = _register(registry, path, manifest, pipeline, cand, best, rows, meta)
            folder = registry.resolve(manifest.name, new_version)
            table_json, table_csv = folder / "pareto.json", folder / "pareto.csv"
        else:
            table_json, table_csv = write_table(rows, out or Path.cwd() / f"optimize-{manifest.name}", meta=meta)
    return OptimizeResult(rows=rows, chosen=best, name=manifest.name, version=new_version, table_json=table_json,
                          table_csv=table_csv, elapsed_s=watch.elapsed, stopped_early=stopped, min_agreement=gate)
