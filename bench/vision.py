"""Image recognition benchmark: Fashion-MNIST head/full accuracy, zero-shot top-5, serving.

    python bench/vision.py [--only head,full,zeroshot,serve] [--device auto|cpu|cuda]
                           [--data-dir DIR] [--out FILE] [--head-resolution 64] [--full-resolution 64]
                           [--full-epochs 4] [--duration 15]

- head: ``App.fit`` + ``App.export`` on the official Fashion-MNIST split (60k train, of which
  10% is held out for validation; 10k test), frozen EfficientNet-Lite0 features at
  ``--head-resolution`` px (28x28 upsampled, no crop), linear head. Test accuracy and
  training wall time (feature extraction included).
- full: the same training core the task's ``full`` mode runs (aiforge.tasks.image.training:
  linear probe, then every stage fine-tuned with augmentation and discriminative rates),
  on ``--device``. It imports only torch, numpy, Pillow, the efficientnet packages and
  aiforge's vision/train modules, so it also runs on a bare GPU machine.
- zeroshot: the ImageNet top-5 of scikit-image's sample photos through the torch-free Runtime.
- serve: the head-mode bundle served by aiforge (guarded int8, int8 alone and fp32 ONNX) vs a
  hand-written FastAPI + PyTorch eager endpoint (bench/baselines/fastapi_torch_image.py),
  single-image requests (Fashion-MNIST test images as base64 PNG), concurrency 1 and 16, same
  machine, same run; plus each precision's top-1 agreement with the eager model on all 10,000
  test images and the share of items guarded int8 re-ran in fp32.

Writes bench/results/vision.json (or --out), merging with an existing file so parts can be
run separately (e.g. ``--only full --device cuda`` on a GPU machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
TARGETS = {"head": 0.88, "full": 0.93, "int8_vs_eager_throughput": 3.0, "int8_top1_agreement": 0.99}


def _light_aiforge(force: bool = False) -> None:
    """On a machine without aiforge's serving/spec dependencies (pydantic, rich...), import its
    vision and training modules without running ``aiforge/__init__`` (full mode needs no more).
    Pure-Python packages copied into ``.gpu-deps/`` (git-ignored) are importable too."""
    sys.path.insert(0, str(ROOT / "src"))
    if (ROOT / ".gpu-deps").is_dir():
        sys.path.insert(0, str(ROOT / ".gpu-deps"))
    if not force and all(importlib.util.find_spec(m) for m in ("pydantic", "yaml", "rich", "fastapi")):
        return
    pkg = types.ModuleType("aiforge")
    pkg.__path__ = [str(ROOT / "src" / "aiforge")]
    sys.modules["aiforge"] = pkg
    if force or importlib.util.find_spec("rich") is None:
        from contextlib import contextmanager

        progress = types.ModuleType("aiforge.progress")

        @contextmanager
        def progress_bar(total: int, description: str, *, enabled: bool = True) -> Any:
            state = {"n": 0, "t": time.perf_counter()}

            def advance(n: int = 1, *, info: str | None = None) -> None:
                state["n"] += n
                if info and time.perf_counter() - state["t"] > 30:
                    state["t"] = time.perf_counter()
                    print(f"   {description}: {state['n']}/{total} {info}", flush=True)
            yield advance

        progress.progress_bar = progress_bar  # type: ignore[attr-defined]
        sys.modules["aiforge.progress"] = progress


def _machine(device: str) -> dict[str, Any]:
    import platform

    import onnxruntime
    import torch

    return {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "device": device, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _fashion(data_dir: Path) -> dict[str, Path]:
    names = {"train": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
             "test": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}
    paths = {k: data_dir / v for k, v in names.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        sys.exit(f"Fashion-MNIST not found in {data_dir} (missing {missing}); apt-get install dataset-fashion-mnist "
                 "or pass --data-dir.")
    return paths


def run_head(args: argparse.Namespace, home: str) -> tuple[dict[str, Any], Any]:
    import aiforge as af
    from aiforge.spec import BaseSpec

    paths = _fashion(args.data_dir)
    spec = BaseSpec.from_dict({
        "name": "fashion-head", "task": "image-classification",
        "data": {**{k: str(v) for k, v in paths.items()}, "format": "idx", "label_names": LABELS,
                 **({"max_per_class": args.train_per_class, "max_test_per_class": args.train_per_class}
                    if args.train_per_class else {})},
        "model": {"mode": "head", "resolution": args.head_resolution, "crop_fraction": 1.0, "head": args.head},
        "train": {"seed": 0, "device": args.device},
        "optimize": {"parity_samples": 1000, "calibration_samples": 256},
    }, source="bench/vision.py")
    app = af.App(spec, home=home)
    t0 = time.perf_counter()
    result = app.fit(progress=True)
    wall = time.perf_counter() - t0
    exported = app.export()
    test = result.test
    row = {"mode": "head", "head": args.head, "resolution": args.head_resolution, "test_accuracy": test.accuracy,
           "test_macro_f1": test.macro_f1, "validation_accuracy": result.validation.accuracy,
           "train_seconds": result.train_seconds, "fit_wall_seconds_incl_data": wall,
           "export_seconds": time.perf_counter() - t0 - wall, "n_train": len(result.splits.train),
           "n_validation": len(result.splits.validation), "n_test": test.n, "history": result.history,
           "parity": exported.parity.to_dict(), "target_accuracy": TARGETS["head"],
           "meets_target": test.accuracy >= TARGETS["head"]}
    print(f"head: test accuracy {test.accuracy:.4f} at {args.head_resolution} px, trained in "
          f"{result.train_seconds:.0f} s", flush=True)
    return row, (result, exported)


def run_full(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from aiforge.audit.metrics import classification_metrics
    from aiforge.hub.catalog import get_backbone
    from aiforge.tasks.image.dataset import ImageDataset, read_idx
    from aiforge.tasks.image.model import ImageClassifier, load_efficientnet, make_head
    from aiforge.tasks.image.preprocess import ImageConfig, preprocess_batch
    from aiforge.tasks.image.training import FullConfig, HeadConfig, extract_features, fit_full, fit_head, pick_device

    torch.manual_seed(0)
    np.random.seed(0)
    device = pick_device(args.device)
    paths = _fashion(args.data_dir)
    x_all, y_all = read_idx(paths["train"]), read_idx(paths["train_labels"])
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x_all))
    n_val = len(x_all) // 10
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if args.limit:
        val_idx, train_idx = val_idx[:args.limit // 10], train_idx[:args.limit]
    names = [LABELS[int(y)] for y in y_all]
    train = ImageDataset(x_all[train_idx], [names[i] for i in train_idx], "fashion train")
    validation = ImageDataset(x_all[val_idx], [names[i] for i in val_idx], "fashion validation")
    test = ImageDataset(read_idx(paths["test"]), [LABELS[int(y)] for y in read_idx(paths["test_labels"])],
                        "fashion test")
    if args.limit:
        test = test.subset(range(args.limit // 5))
    index = {y: i for i, y in enumerate(LABELS)}
    y_train = torch.tensor([index[y] for y in train.labels])
    y_val = [index[y] for y in validation.labels]
    image = ImageConfig.for_resolution(args.full_resolution, crop_fraction=1.0)
    backbone = get_backbone("efficientnet-lite0")
    model = ImageClassifier(load_efficientnet(backbone, args.full_resolution),
                            make_head("linear", 1280, len(LABELS))).to(device)
    t0 = time.perf_counter()
    x_tr = extract_features(model, train, image, description="features (train)")
    x_va = extract_features(model, validation, image, description="features (validation)")
    history = fit_head(model, x_tr, y_train, x_va, y_val, HeadConfig(epochs=10)).history
    cfg = FullConfig(epochs=args.full_epochs, batch_size=args.full_batch_size, lr=args.full_lr,
                     head_lr=1e-3, patience=2)
    history += fit_full(model, train, y_train, validation, y_val, image, cfg, n_classes=len(LABELS)).history
    seconds = time.perf_counter() - t0
    model.eval()
    probs = []
    with torch.inference_mode():
        for s in range(0, len(test), 512):
            x = torch.from_numpy(preprocess_batch([test.image(i) for i in range(s, min(s + 512, len(test)))], image))
            probs.append(torch.softmax(model(x.to(device)), -1).float().cpu().numpy())
    m = classification_metrics(test.labels, np.concatenate(probs), LABELS)
    print(f"full: test accuracy {m.accuracy:.4f} at {args.full_resolution} px on {device}, trained in "
          f"{seconds:.0f} s", flush=True)
    return {"mode": "full", "resolution": args.full_resolution, "device": str(device), "test_accuracy": m.accuracy,
            "test_macro_f1": m.macro_f1, "train_seconds": seconds, "epochs": args.full_epochs,
            "batch_size": args.full_batch_size, "lr": args.full_lr, "history": history, "n_train": len(train),
            "n_validation": len(validation), "n_test": len(test), "target_accuracy": TARGETS["full"],
            "meets_target": m.accuracy >= TARGETS["full"], "machine": _machine(str(device.type))}


def run_zeroshot(home: str) -> dict[str, Any]:
    import io

    from PIL import Image

    import aiforge as af
    from aiforge.spec import BaseSpec
    from aiforge.tasks.image.samples import SAMPLE_PHOTOS, sample_photos

    spec = BaseSpec.from_dict({"name": "imagenet", "task": "image-classification",
                               "optimize": {"quantize": False}}, source="bench/vision.py")
    app = af.App(spec, home=home)
    app.fit(progress=False)
    exported = app.export()
    rt = af.load(exported.path)
    out = {}
    for name, arr in sample_photos().items():
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=95)
        pred = rt.predict([buf.getvalue()])[0]
        top5 = sorted(pred.scores.items(), key=lambda kv: -kv[1])[:5]
        expected = SAMPLE_PHOTOS[name]
        out[name] = {"top5": [[k, round(v, 4)] for k, v in top5], "expected_any_of": expected,
                     "hit": any(e in k for k, _ in top5 for e in expected) if expected else None}
        print(f"zero-shot {name}: {[k.split(',')[0] for k, _ in top5]}", flush=True)
    return out


def run_serve(args: argparse.Namespace, trained: Any) -> dict[str, Any]:
    import base64
    import io

    import numpy as np
    from PIL import Image
    from safetensors.torch import save_file

    import aiforge as af
    from aiforge.serve.benchmark import rss_mb
    from aiforge.serve.loadgen import aiforge_server_args, free_port, measure_levels, running_server
    from aiforge.tasks.image.dataset import read_idx

    result, exported = trained
    fitted = result.fitted
    paths = _fashion(args.data_dir)
    test_x, test_y = read_idx(paths["test"]), read_idx(paths["test_labels"])
    images = []
    for arr in test_x[:2000]:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        images.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    out: dict[str, Any] = {"request": "one Fashion-MNIST test image per request, base64 PNG (28x28)",
                           "duration_s": args.duration, "levels": [1, 16], "servers": []}
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-vision-") as tmp:
        model_dir, logdir = Path(tmp) / "model", Path(tmp) / "logs"
        model_dir.mkdir()
        logdir.mkdir()
        state = {k: v.detach().cpu().contiguous() for k, v in fitted.model.state_dict().items()}
        save_file(state, str(model_dir / "weights.safetensors"))
        (model_dir / "meta.json").write_text(json.dumps({"resolution": fitted.image.resolution,
                                                         "resize": fitted.image.resize, "labels": fitted.labels}))
        # top-1 agreement of the runtimes with the eager model on all 10,000 official test images (the
        # export's parity set is 1000 of them; the margin threshold was chosen on validation images)
        import torch

        sys.path.insert(0, str(ROOT / "bench" / "baselines"))
        os.environ["MODEL_DIR"] = str(model_dir)
        import fastapi_torch_image as baseline

        every = []
        for arr in test_x:
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            every.append(buf.getvalue())
        with torch.inference_mode():
            eager = np.concatenate([
                baseline.MODEL(torch.stack([baseline.prepare(base64.b64encode(b).decode()) for b in every[i:i + 256]]))
                .argmax(1).numpy() for i in range(0, len(every), 256)])
        agreement, served = {}, {}
        pipeline = json.loads((exported.path / "pipeline.json").read_text())
        graphs = pipeline["graphs"]
        precisions = [*graphs, *(["int8-only"] if "int8_fallback" in pipeline else [])]
        for precision in precisions:
            rt = af.load(exported.path, precision=precision)
            probs = served[precision] = np.concatenate([rt.predict_proba(every[i:i + 256])
                                                        for i in range(0, len(every), 256)])
            counts = rt.counters()
            agreement[precision] = {
                "top1_agreement_with_eager": float((probs.argmax(1) == eager).mean()),
                "top1_agreement_with_eager_first_2000": float((probs[:2000].argmax(1) == eager[:2000]).mean()),
                "accuracy": float((probs.argmax(1) == test_y).mean()),
                "fp32_fallback_rate": counts["fp32_fallback_items"] / max(1, counts["items"])}
            print(f"   {precision:9s} agreement with eager {agreement[precision]['top1_agreement_with_eager']:.4f} "
                  f"fallback {agreement[precision]['fp32_fallback_rate']:.3f}", flush=True)
        out["agreement_on_10000_test_images"] = agreement
        if "int8-only" in precisions:
            out["guard_threshold_robustness"] = guard_robustness(exported.path, result.splits, served["int8-only"],
                                                                 served["fp32"], eager)
        out["offline_images_per_s"] = offline_speed(exported.path, precisions, test_x[:1024])
        out["eager_accuracy_on_10000_test_images"] = float((eager == test_y).mean())
        out["export_parity"] = exported.parity.to_dict()
        out["int8_fallback"] = pipeline.get("int8_fallback")
        env = dict(os.environ, AIFORGE_HOME=str(exported.path.parents[2]), MODEL_DIR=str(model_dir),
                   PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "bench" / "baselines")]))
        runs = [("baseline_fastapi_pytorch_eager",
                 [sys.executable, "-m", "uvicorn", "fastapi_torch_image:app", "--port", "{port}", "--no-access-log",
                  "--app-dir", str(ROOT / "bench" / "baselines")], "/ready", "/predict", "v1")]
        for precision in ("int8", "int8-only", "fp32"):
            if precision in precisions:
                runs.append((f"aiforge_{precision}", aiforge_server_args([str(exported.path)], port=0,
                                                                          extra=["--precision", precision]),
                             "/v2/health/ready", "/v2/models/fashion-head/infer", "v2"))
        for name, cmd, ready_path, route, protocol in runs:
            port = free_port()
            cmd = [str(port) if c in ("{port}", "0") and cmd[i - 1] == "--port" else c for i, c in enumerate(cmd)]
            print(f"== {name}", flush=True)
            with running_server(cmd, port=port, ready_path=ready_path, env=env, timeout=300,
                                log=logdir / f"{name}.log") as (proc, ready):
                rows = measure_levels(f"http://127.0.0.1:{port}", route, images, levels=[1, 16],
                                      duration=args.duration, protocol=protocol, warmup_concurrency=4, unit="img/s")
                out["servers"].append({"server": name, "ready_seconds": ready, "rss_mb_after_load": rss_mb(proc.pid),
                                       "levels": rows})
    by = {s["server"]: {r["concurrency"]: r for r in s["levels"]} for s in out["servers"]}
    base = by.get("baseline_fastapi_pytorch_eager", {})
    ratios = {}
    for name in ("aiforge_int8", "aiforge_int8-only", "aiforge_fp32"):
        for c in (1, 16):
            if name in by and c in base:
                ratios[f"{name}_vs_eager_throughput_c{c}"] = by[name][c]["throughput_rps"] / base[c]["throughput_rps"]
                ratios[f"{name}_vs_eager_p99_ratio_c{c}"] = by[name][c]["p99_ms"] / base[c]["p99_ms"]
    out["ratios"] = ratios
    print(json.dumps(ratios, indent=2), flush=True)
    return out


def offline_speed(bundle: Path, precisions: list[str], images: Any) -> dict[str, dict[str, float]]:
    """Runtime.predict_proba on preprocessed images (no HTTP, no decoding), batch 1 / 16 / 64:
    what each precision costs in the model itself."""
    from PIL import Image

    import aiforge as af
    from aiforge.tasks.image.preprocess import preprocess

    out: dict[str, dict[str, float]] = {}
    for precision in precisions:
        rt = af.load(bundle, precision=precision)
        rt.warmup()
        pixels = [preprocess(Image.fromarray(a), rt.image) for a in images]
        out[precision] = {}
        for bs in (1, 16, 64):
            n = 256 if bs == 1 else len(pixels)
            start = time.perf_counter()
            for i in range(0, n, bs):
                rt.predict_proba(pixels[i:i + bs])
            out[precision][f"batch_{bs}"] = n / (time.perf_counter() - start)
        print(f"   offline {precision:9s} " + "  ".join(f"{k} {v:6.0f}/s" for k, v in out[precision].items()),
              flush=True)
    return out


def guard_robustness(bundle: Path, splits: Any, test8: Any, test32: Any, eager: Any) -> dict[str, Any]:
    """How stable is the guard's margin threshold? Draw 30 tuning sets of n held-out images the way
    the exporter does (the served head's validation images first, topped up with random training
    images), choose the threshold on each, and score guarded int8 against the eager model on all
    10,000 test images (``test8`` / ``test32``: their int8-only and fp32 probabilities)."""
    import numpy as np

    import aiforge as af
    from aiforge.tasks.image.fallback import guarded, min_margin_for
    from aiforge.tasks.image.spec import ImageOptimizeSpec

    def probs(precision: str, items: list[Any]) -> Any:
        rt = af.load(bundle, precision=precision)
        return np.concatenate([rt.predict_proba(items[i:i + 256]) for i in range(0, len(items), 256)])

    val, train = splits.validation, splits.train
    pool = [ds.image(i) for ds in (val, train) for i in range(len(ds))]
    pool8, pool32 = probs("int8-only", pool), probs("fp32", pool)
    opt = ImageOptimizeSpec()
    rng = np.random.default_rng(0)
    rows = []
    for n in (300, 600, 1000, 2000):
        runs = []
        for _ in range(30):
            if n <= len(val):
                idx = rng.choice(len(val), n, replace=False)
            else:
                idx = np.concatenate([np.arange(len(val)),
                                      len(val) + rng.choice(len(train), n - len(val), replace=False)])
            margin = min_margin_for(pool8[idx], pool32[idx], opt.fallback_agreement, limit=opt.min_int8_agreement)
            served, fell = guarded(test8, test32, margin)
            runs.append((float((served.argmax(1) == eager).mean()), float(fell.mean()), margin))
        arr = np.array(runs)
        rows.append({"tuning_images": n, "draws": len(runs), "agreement_mean": float(arr[:, 0].mean()),
                     "agreement_min": float(arr[:, 0].min()), "fallback_rate_mean": float(arr[:, 1].mean()),
                     "fallback_rate_max": float(arr[:, 1].max()), "min_margin_mean": float(arr[:, 2].mean())})
        print(f"   guard tuned on {n:5d} images: agreement mean {rows[-1]['agreement_mean']:.4f} "
              f"min {rows[-1]['agreement_min']:.4f}, fallback mean {rows[-1]['fallback_rate_mean']:.3f}", flush=True)
    return {"pool": f"{len(val)} validation images, then random ones of {len(train)} training images",
            "target": opt.fallback_agreement, "confidence_limit": opt.min_int8_agreement,
            "scored_on": "all 10,000 test images, against the eager model", "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", default="head,zeroshot,serve,full")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--data-dir", type=Path, default=FASHION_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS / "vision.json")
    parser.add_argument("--head-resolution", type=int, default=64)
    parser.add_argument("--head", default="linear", choices=["linear", "mlp"], help="head kind (head mode)")
    parser.add_argument("--full-resolution", type=int, default=64)
    parser.add_argument("--full-epochs", type=int, default=6)
    parser.add_argument("--full-batch-size", type=int, default=128)
    parser.add_argument("--full-lr", type=float, default=1e-3)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--limit", type=int, default=0, help="smoke test: at most this many training images (full)")
    parser.add_argument("--light", action="store_true", help="import aiforge as on a bare GPU machine (full)")
    parser.add_argument("--train-per-class", type=int, default=0,
                        help="serve only: train the served head on at most this many images per class (and score "
                             "it on as many test images per class); its row goes under serving.head_training, "
                             "not runs.head")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    _light_aiforge(force=args.light)
    payload: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    payload.update({"benchmark": "Fashion-MNIST transfer learning, ImageNet zero-shot, image serving",
                    "targets": TARGETS})
    runs = payload.setdefault("runs", {})
    with tempfile.TemporaryDirectory(prefix="aiforge-bench-vision-home-") as home:
        trained = None
        if args.train_per_class and "head" in parts:
            sys.exit("--train-per-class is for --only serve: a subset-trained head is no accuracy result")
        head_row: dict[str, Any] = {}
        if "head" in parts or "serve" in parts:
            head_row, trained = run_head(args, home)
            head_row["command"] = (f"python bench/vision.py --only {args.only} "
                                   f"--head-resolution {args.head_resolution} --head {args.head}"
                                   + (f" --train-per-class {args.train_per_class}" if args.train_per_class else ""))
            head_row["machine"] = _machine("cpu" if args.device != "cuda" else "cuda")
            if not args.train_per_class:
                runs["head"] = head_row
        if "zeroshot" in parts:
            payload["zero_shot_top5"] = run_zeroshot(home)
        if "serve" in parts:
            payload["serving"] = run_serve(args, trained)
            payload["serving"]["machine"] = _machine("cpu")
            payload["serving"]["command"] = (f"python bench/vision.py --only serve --duration {args.duration:g} "
                                             f"--head {args.head}"
                                             + (f" --train-per-class {args.train_per_class}"
                                                if args.train_per_class else ""))
            if args.train_per_class:
                payload["serving"]["head_training"] = {
                    **{k: v for k, v in head_row.items() if k != "history"},
                    "note": (f"the served head was trained on at most {args.train_per_class} images per class "
                             "(and scored on as many test images per class) to keep the run short: serving speed "
                             "and int8 agreement do not need the full training set; runs.head holds the "
                             "full-data accuracy")}
        if "full" in parts:
            runs["full"] = run_full(args)
            runs["full"]["command"] = (f"python bench/vision.py --only full --device {args.device} --full-resolution "
                                       f"{args.full_resolution} --full-epochs {args.full_epochs}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
