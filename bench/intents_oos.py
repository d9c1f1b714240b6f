"""BANKING77 with 10 intents held out as unknown: out-of-scope recall at in-scope accuracy, per recipe.

    AIFORGE_SHARED_DATA=/work/shared/data python bench/intents_oos.py [--recipes ce,lmcl,lmcl_oe] [--epochs 2]
        [--backbone minilm-l6|bge-small]

Protocol: 10 of the 77 intents are held out (numpy seed 0, as bench/chat.py); the encoder is fine-tuned
on the other 67 intents' train rows less a stratified 10% validation split (seed 0); each score's
threshold is calibrated on that validation split alone, to keep a target share of its in-scope texts;
test: in-scope accuracy over the 67 known intents' test rows (a rejected one counts as wrong) and
out-of-scope recall over the 10 unknown intents' test rows. Recipes: ``ce`` = cross-entropy on the cosine
head without margin; ``lmcl`` = large-margin cosine head (s=30, m=0.35); ``lmcl_oe`` = lmcl plus synthetic outliers
(spliced halves of two intents' examples) as an extra, never-served class; ``lmcl_supcon`` = lmcl plus
supervised contrastive loss (weight 1, temperature 0.1) on the pooled features, in batches of 4 examples of 8
intents. Scores: ``msp`` = top
probability, ``maha`` = Mahalanobis distance to the nearest intent mean of the fine-tuned features,
``knn`` = cosine to the nearest training example. Writes the key ``out_of_scope_b77_finetuned`` of
bench/results/chat.json (read-modify-write).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import RESULTS, machine, shared_data
from aiforge.audit.metrics import macro_f1
from aiforge.audit.out_of_scope import rejection_curve
from aiforge.bundle.out_of_scope import DistanceScorer, NearestScorer
from aiforge.data.splits import stratified_split
from aiforge.hub.catalog import get_backbone
from aiforge.hub.text_encoder import TextEncoder, iter_batches, load_tokenizer
from aiforge.tasks.text.margin import (
    CosineHead,
    balanced_batches,
    epoch_batches,
    margin_contrastive_loss,
    synthetic_outliers,
)
from aiforge.tasks.text.model import TextClassifier
from aiforge.train.loop import LoopConfig, fit_loop, seed_everything

SEED = 0
N_UNKNOWN = 10
KEY = "out_of_scope_b77_finetuned"
CHAT_KEY = "out_of_scope_b77_chat_layer"
SUPCON_WEIGHT = 1.0
SUPCON_TEMPERATURE = 0.1
TARGETS = (0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98)


def _rows(name: str) -> list[dict[str, str]]:
    with (shared_data() / "banking77" / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load(limit: int | None = None, per_label: int | None = None) -> dict[str, Any]:
    tr, te = _rows("train.csv"), _rows("test.csv")
    if limit:  # a smoke run: the first rows of each intent
        seen: dict[str, int] = {}
        tr = [r for r in tr if (seen.__setitem__(r["category"], seen.get(r["category"], 0) + 1)
                                or seen[r["category"]] <= limit)]
        te = te[::10]
    labels = sorted({r["category"] for r in tr})
    rng = np.random.default_rng(SEED)
    unknown = sorted(rng.choice(labels, size=N_UNKNOWN, replace=False).tolist())
    known = [y for y in labels if y not in unknown]
    k = {y: i for i, y in enumerate(known)}
    kt = [r for r in tr if r["category"] in k]
    keep, held = stratified_split([r["category"] for r in kt], fraction=0.1, seed=SEED)
    if per_label:  # a training subsample (seeded, every intent), for the 2-core budget; validation stays whole
        rng2 = np.random.default_rng(SEED)
        keep = sorted(i for y in known
                      for i in rng2.permutation([j for j in keep if kt[j]["category"] == y])[:per_label])
    return {"unknown": unknown, "known": known,
            "train": ([kt[i]["text"] for i in keep], np.array([k[kt[i]["category"]] for i in keep])),
            "validation": ([kt[i]["text"] for i in held], np.array([k[kt[i]["category"]] for i in held])),
            "test_in": ([r["text"] for r in te if r["category"] in k],
                        np.array([k[r["category"]] for r in te if r["category"] in k])),
            "test_out": [r["text"] for r in te if r["category"] not in k]}


@torch.inference_mode()
def embed(model: TextClassifier, tok: Any, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(pooled features, served logits) in input order."""
    model.eval()
    feats = np.zeros((len(texts), model.encoder.dim), dtype=np.float32)
    logits = np.zeros((len(texts), model.head.served), dtype=np.float32)
    for idx, ids, mask in iter_batches(tok, texts, 128):
        f = model.encoder(ids, mask)
        feats[idx] = f.numpy()
        logits[idx] = model.head(f).numpy()
    return feats, logits


def train(recipe: str, data: dict[str, Any], *, epochs: int, max_length: int, seed: int,
          backbone_name: str = "minilm-l6") -> dict[str, Any]:
    seed_everything(seed)
    backbone = get_backbone(backbone_name)
    tok = load_tokenizer(backbone.path() / "tokenizer.json", max_length)
    encoder = TextEncoder(backbone)
    texts, y = data["train"]
    n = len(data["known"])
    margin = 0.0 if recipe == "ce" else 0.35
    outliers = synthetic_outliers(texts, y, len(texts) // 5, seed=seed) if recipe.endswith("_oe") else []
    head = CosineHead(encoder.dim, n, scale=30.0, margin=margin, extra=1 if outliers else 0)
    model = TextClassifier(encoder, head)
    start = time.perf_counter()
    frozen = torch.from_numpy(encoder.embed(tok, texts))
    head.init_from(frozen, torch.from_numpy(y))
    if recipe == "frozen":  # no fine-tuning: the pre-trained features, the class-mean cosine head
        out = {part: embed(model, tok, data[part][0]) for part in ("train", "validation", "test_in")}
        out["test_out"] = embed(model, tok, data["test_out"])
        return {"embed": out, "train_seconds": 0.0, "embed_seconds": time.perf_counter() - start,
                "history": [], "epoch_end_seconds": [], "n_outliers": 0, "train_rows": len(texts)}
    if outliers:
        with torch.no_grad():
            mean = torch.from_numpy(encoder.embed(tok, outliers)).mean(0)
            head.weight[n] = torch.nn.functional.normalize(mean, dim=0)
    all_texts = list(texts) + outliers
    targets = torch.tensor(np.concatenate([y, np.full(len(outliers), n)]).astype(np.int64))
    seqs = [e.ids for e in tok.encode_batch(all_texts)]
    bs = 32
    vt, vy = data["validation"]

    epoch_seconds: list[float] = []

    def validate() -> tuple[float, float]:  # called once per epoch: its time is the epoch's end
        epoch_seconds.append(time.perf_counter() - start)
        _, lg = embed(model, tok, vt)
        t = torch.from_numpy(lg)
        return macro_f1(list(vy), lg.argmax(1)), float(torch.nn.functional.cross_entropy(t, torch.from_numpy(vy)))

    cfg = LoopConfig(epochs=epochs, weight_decay=0.01, warmup_ratio=0.1, label_smoothing=0.0, patience=epochs,
                     description=recipe)
    groups: list[dict[str, object]] = [{"params": list(encoder.parameters()), "lr": 1e-4},
                                       {"params": list(head.parameters()), "lr": 1e-2}]
    if recipe.startswith("lmcl_supcon"):  # margin head + supervised contrastive on the pooled features
        per = 4  # 8 intents x 4 examples = 32 rows a batch, as the other recipes
        steps = sum((int((targets == c).sum()) + per - 1) // per for c in targets.unique()) // (bs // per) + 1
        loop = fit_loop(model, groups, lambda e: balanced_batches(seqs, targets, labels_per_batch=bs // per,
                                                                  per_label=per, seed=seed * 1000 + e),
                        steps, validate, cfg, progress=False,
                        loss=margin_contrastive_loss(weight=SUPCON_WEIGHT, temperature=SUPCON_TEMPERATURE))
    else:
        loop = fit_loop(model, groups, lambda e: epoch_batches(seqs, targets, bs, seed=seed * 1000 + e,
                                                               with_targets=True),
                        (len(seqs) + bs - 1) // bs, validate, cfg, progress=False)
    train_s = time.perf_counter() - start
    t0 = time.perf_counter()
    out = {part: embed(model, tok, data[part][0]) for part in ("train", "validation", "test_in")}
    out["test_out"] = embed(model, tok, data["test_out"])
    return {"embed": out, "train_seconds": train_s, "embed_seconds": time.perf_counter() - t0,
            "history": loop.history, "epoch_end_seconds": epoch_seconds, "n_outliers": len(outliers),
            "train_rows": len(seqs)}


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return np.asarray(e / e.sum(1, keepdims=True))


def _unit(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), dtype=np.float32)


def _knn_mean(train: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Mean of ``1 - cos`` to the ``k`` nearest training examples."""
    sims = _unit(x) @ _unit(train).T
    top = -np.sort(-sims, axis=1)[:, :k]
    return np.asarray(1.0 - top.mean(axis=1), dtype=np.float32)


def scores(run: dict[str, Any], y_train: np.ndarray, n: int) -> dict[str, dict[str, np.ndarray]]:
    """Per score name, per part: higher = more out of scope."""
    from scipy.special import logsumexp
    from sklearn.neighbors import LocalOutlierFactor

    emb = run["embed"]
    parts = ("validation", "test_in", "test_out")
    train = emb["train"][0]
    maha = DistanceScorer.fit(train, y_train, n)
    maha_norm = DistanceScorer.fit(_unit(train), y_train, n)
    nearest = NearestScorer.fit(train)  # the served ``method: nearest`` scorer
    lof = LocalOutlierFactor(n_neighbors=20, novelty=True, metric="euclidean").fit(_unit(train))
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name in
                                             ("msp", "energy", "maha", "maha_norm", "knn", "knn5", "knn10", "lof")}
    for part in parts:
        f, lg = emb[part]
        out["msp"][part] = -_softmax(lg).max(1)
        out["energy"][part] = -logsumexp(lg, axis=1)
        out["maha"][part] = maha.score(f)
        out["maha_norm"][part] = maha_norm.score(_unit(f))
        out["knn"][part] = nearest.score(f)
        out["knn5"][part] = _knn_mean(train, f, 5)
        out["knn10"][part] = _knn_mean(train, f, 10)
        out["lof"][part] = -lof.score_samples(_unit(f))
    # class-conditional: the nearest example of the predicted intent, divided by that intent's typical
    # leave-one-out nearest-neighbour distance among its training examples (a per-intent threshold)
    scale = _class_scale(train, y_train, n)
    out["knn_class"], out["knn_class_norm"] = {}, {}
    for part in parts:
        f, lg = emb[part]
        d = _nearest_of_class(train, y_train, f, lg.argmax(1))
        out["knn_class"][part] = d
        out["knn_class_norm"][part] = d / scale[lg.argmax(1)]
    # combinations: each score standardised by its validation (in-scope) mean and spread, then summed
    for combo in (("msp", "knn"), ("msp", "maha_norm"), ("knn", "maha_norm"), ("msp", "lof"), ("energy", "knn"),
                  ("msp", "knn5"), ("msp", "knn", "energy"), ("msp", "knn_class_norm"), ("energy", "knn_class_norm")):
        z = [(out[a]["validation"].mean(), out[a]["validation"].std() + 1e-12) for a in combo]
        out["+".join(combo)] = {p: sum((out[a][p] - m) / sd for a, (m, sd) in zip(combo, z, strict=True))
                                for p in parts}
    return out


def _nearest_of_class(train: np.ndarray, y_train: np.ndarray, x: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``1 - cos`` to the nearest training example of each row's predicted intent."""
    sims = _unit(x) @ _unit(train).T
    sims[pred[:, None] != y_train[None, :]] = -1.0
    return np.asarray(1.0 - sims.max(axis=1), dtype=np.float32)


def _class_scale(train: np.ndarray, y_train: np.ndarray, n: int) -> np.ndarray:
    """Per intent, the median over its training examples of ``1 - cos`` to their nearest other example of it."""
    u = _unit(train)
    out = np.ones(n, dtype=np.float32)
    for c in range(n):
        rows = u[y_train == c]
        if len(rows) < 2:
            continue
        sims = rows @ rows.T
        np.fill_diagonal(sims, -1.0)
        out[c] = max(float(np.median(1.0 - sims.max(axis=1))), 1e-3)
    return out


def point(s_in: np.ndarray, correct: np.ndarray, s_out: np.ndarray, t: float) -> dict[str, float | None]:
    return rejection_curve(s_in, correct, s_out, [t])[0]


def _at_val_accuracy(s: dict[str, np.ndarray], correct_val: np.ndarray, correct: np.ndarray,
                     accuracy: float) -> dict[str, Any]:
    """The lowest threshold whose validation in-scope accuracy (a rejection counts as wrong) is still
    ``accuracy``, chosen on the validation split alone, and what it gives on test."""
    grid = np.unique(s["validation"])
    acc = np.array([((s["validation"] <= t) & correct_val).mean() for t in grid])
    ok = grid[acc >= accuracy]
    t = float(ok.min()) if len(ok) else float(grid.max())
    return {"validation_in_scope_accuracy": accuracy, **point(s["test_in"], correct, s["test_out"], t)}


def evaluate(run: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    n = len(data["known"])
    sc = scores(run, data["train"][1], n)
    emb = run["embed"]
    correct_val = emb["validation"][1].argmax(1) == data["validation"][1]
    correct = emb["test_in"][1].argmax(1) == data["test_in"][1]
    res: dict[str, Any] = {"test_in_scope_accuracy_without_rejection": float(correct.mean()),
                           "validation_accuracy": float(correct_val.mean())}
    for name, s in sc.items():
        cal = [{"target_in_scope_recall": q, **point(s["test_in"], correct, s["test_out"],
                                                     float(np.quantile(s["validation"], q)))} for q in TARGETS]
        grid = np.quantile(s["test_in"], np.linspace(0.80, 1.0, 41))
        curve = [point(s["test_in"], correct, s["test_out"], float(t)) for t in grid]
        ok = [c["out_of_scope_recall"] for c in curve if c["in_scope_accuracy"] >= 0.9]
        res[name] = {"calibrated_on_validation": cal,
                     "calibrated_at_validation_accuracy": [_at_val_accuracy(s, correct_val, correct, a)
                                                           for a in (0.90, 0.91, 0.92)],
                     "test_curve": curve,
                     "oracle_recall_at_in_scope_accuracy_0.9": max(ok) if ok else None}
    return res


def chat_layer(run: dict[str, Any], data: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    """The chat intent layer (``tasks/chat/build.fit_intents``, its served ``IntentModel.detect``) on these
    features: trained on all the known intents' train rows (train + validation: it calibrates out-of-fold),
    no out-of-scope examples, tested like the text task."""
    from aiforge.tasks.chat.build import fit_intents
    from aiforge.tasks.chat.spec import IntentsSpec

    emb = run["embed"]
    x = _unit(np.concatenate([emb["train"][0], emb["validation"][0]]))
    y = np.concatenate([data["train"][1], data["validation"][1]])
    t_in, t_out = _unit(emb["test_in"][0]), _unit(emb["test_out"][0])
    out: dict[str, Any] = {}
    for method in methods:
        load0, t0 = _loadavg(), time.perf_counter()
        spec = IntentsSpec(files=[str(shared_data() / "banking77" / "train.csv")], method=method,
                           target_in_scope_recall=0.95)
        model = fit_intents(spec, data["known"], x, y, None, source="none", handlers={})
        fit_s = time.perf_counter() - t0
        hits_in = [model.detect(v) for v in t_in]
        hits_out = [model.detect(v) for v in t_out]
        truth = [data["known"][i] for i in data["test_in"][1]]
        served = {"in_scope_accuracy": float(np.mean([h[0] == t for h, t in zip(hits_in, truth, strict=True)])),
                  "out_of_scope_recall": float(np.mean([h[0] is None for h in hits_out])),
                  "in_scope_accepted": float(np.mean([h[0] is not None for h in hits_in]))}
        probs = model.predict_proba(t_in)
        correct = probs.argmax(1) == data["test_in"][1]
        s = {"test_in": np.array([h[2] for h in hits_in]), "test_out": np.array([h[2] for h in hits_out])}
        if model.scorer is None:  # probability: the score is minus the top probability
            s = {"test_in": -probs.max(1), "test_out": -model.predict_proba(t_out).max(1)}
        grid = np.quantile(s["test_in"], np.linspace(0.80, 1.0, 41))
        curve = [point(s["test_in"], correct, s["test_out"], float(t)) for t in grid]
        ok = [c["out_of_scope_recall"] for c in curve if c["in_scope_accuracy"] >= 0.9]
        cal = model.calibration
        out[method] = {"served_at_calibrated_threshold": served, "fit_seconds": fit_s,
                       "threshold": model.distance_threshold if model.scorer is not None else model.threshold,
                       "calibration_method": cal["method"], "out_of_fold_accuracy": cal["out_of_fold_accuracy"],
                       "out_of_fold_curve": cal.get("curve"), "test_curve": curve,
                       "oracle_recall_at_in_scope_accuracy_0.9": max(ok) if ok else None,
                       "test_in_scope_accuracy_without_rejection": float(correct.mean()),
                       "loadavg_start": load0, "loadavg_end": _loadavg()}
        print(f"  chat {method}: served {served}, oracle {out[method]['oracle_recall_at_in_scope_accuracy_0.9']}",
              flush=True)
    return out


def frozen_features(backbone: str, cache: Path | None) -> dict[str, np.ndarray]:
    """The chat layer's ONNX encoder (``hub.encoder_export.cached_encoder``) over every row of train.csv and
    test.csv, in file order (cached in ``cache`` as ``frozen_<backbone>_all.npz``)."""
    path = None if cache is None else cache / f"frozen_{backbone}_all.npz"
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in ("train", "test", "seconds")}
    from aiforge.hub.encoder_export import cached_encoder
    from aiforge.hub.onnx_encoder import ENCODER_GRAPH, ENCODER_TOKENIZER, OnnxEncoder

    folder, _ = cached_encoder(backbone)
    enc = OnnxEncoder(folder / ENCODER_GRAPH, folder / ENCODER_TOKENIZER, threads=1)
    t0 = time.perf_counter()
    out = {part: enc.embed([r["text"] for r in _rows(f"{part}.csv")]) for part in ("train", "test")}
    out["seconds"] = np.array(time.perf_counter() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **out)
    return out


def frozen_run(feats: dict[str, np.ndarray], data: dict[str, Any]) -> dict[str, Any]:
    """A run of the 10-unknown protocol on frozen features: a logistic-regression head (the chat layer's,
    C=10) fitted on the train part gives the logits."""
    from aiforge.tasks.chat.intents import fit_head

    index: dict[str, np.ndarray] = {}
    for part in ("train", "test"):
        for r, v in zip(_rows(f"{part}.csv"), feats[part], strict=True):
            index[r["text"]] = v
    x = {part: np.stack([index[t] for t in data[part][0]]) for part in ("train", "validation", "test_in")}
    x["test_out"] = np.stack([index[t] for t in data["test_out"]])
    w, b = fit_head(x["train"], data["train"][1], len(data["known"]))
    return {"embed": {part: (v, v @ w.T + b) for part, v in x.items()}}


def examples_protocol(feats: dict[str, np.ndarray], methods: list[str]) -> dict[str, Any]:
    """Not the issue's protocol: 20 intents held out (numpy seed 0); the train rows of the first 10 drawn are
    given to the chat layer as out-of-scope examples (``intents.out_of_scope``), the other 10 are never seen;
    in-scope accuracy on the 57 known intents' test rows, out-of-scope recall on each group's test rows."""
    from aiforge.tasks.chat.build import fit_intents
    from aiforge.tasks.chat.spec import IntentsSpec

    tr, te = _rows("train.csv"), _rows("test.csv")
    labels = sorted({r["category"] for r in tr})
    drawn = np.random.default_rng(SEED).choice(labels, size=2 * N_UNKNOWN, replace=False).tolist()
    given, unseen = sorted(drawn[:N_UNKNOWN]), sorted(drawn[N_UNKNOWN:])
    known = [y for y in labels if y not in drawn]
    k = {y: i for i, y in enumerate(known)}
    x = np.stack([v for r, v in zip(tr, feats["train"], strict=True) if r["category"] in k])
    y = np.array([k[r["category"]] for r in tr if r["category"] in k])
    oos_x = np.stack([v for r, v in zip(tr, feats["train"], strict=True) if r["category"] in given])
    t_in = [(v, r["category"]) for r, v in zip(te, feats["test"], strict=True) if r["category"] in k]
    out: dict[str, Any] = {"given_intents": given, "unseen_intents": unseen, "known_intents": len(known),
                           "given_examples": len(oos_x)}
    for method in methods:
        load0, t0 = _loadavg(), time.perf_counter()
        spec = IntentsSpec(files=[str(shared_data() / "banking77" / "train.csv")], method=method,
                           target_in_scope_recall=0.9)
        model = fit_intents(spec, known, x, y, oos_x, source="examples", handlers={})

        def recall(group: list[str], m: Any = model) -> float:
            return float(np.mean([m.detect(v)[0] is None
                                  for r, v in zip(te, feats["test"], strict=True) if r["category"] in group]))

        out[method] = {"in_scope_accuracy": float(np.mean([model.detect(v)[0] == t for v, t in t_in])),
                       "in_scope_accepted": float(np.mean([model.detect(v)[0] is not None for v, _ in t_in])),
                       "out_of_scope_recall_unseen_intents": recall(unseen),
                       "out_of_scope_recall_given_intents": recall(given),
                       "calibration_method": model.calibration["method"], "fit_seconds": time.perf_counter() - t0,
                       "loadavg_start": load0, "loadavg_end": _loadavg()}
        print(f"  examples {method}: {out[method]}", flush=True)
    return out


def frozen_main(backbones: list[str], methods: list[str], cache: Path | None) -> None:
    """Frozen chat-layer encoders: every score on the 10-unknown protocol, the served chat layer, and the
    out-of-scope-examples protocol; keys ``out_of_scope_frozen_encoders``, ``out_of_scope_examples_protocol``."""
    data = load()
    for backbone in backbones:
        load0 = _loadavg()
        feats = frozen_features(backbone, cache)
        run = frozen_run(feats, data)
        row = {"command": "AIFORGE_SHARED_DATA=/work/shared/data python bench/intents_oos.py --frozen "
                          f"{backbone} --chat {','.join(methods)}",
               "embed_seconds": float(feats["seconds"]), **evaluate(run, data),
               "chat_layer": chat_layer(run, data, methods)}
        examples = {"command": row["command"], **examples_protocol(feats, methods)}
        row.update(loadavg_start=load0, loadavg_end=_loadavg())
        path = RESULTS / "chat.json"
        results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        for key, value, note in (("out_of_scope_frozen_encoders", row, frozen_run.__doc__),
                                 ("out_of_scope_examples_protocol", examples, examples_protocol.__doc__)):
            block = results.get(key) or {}
            block.update(note=" ".join((note or "").split()), machine=machine())
            block.setdefault("runs", {})[backbone] = value
            results[key] = block
        path.write_text(json.dumps(results, indent=2), encoding="utf-8")
        print(backbone, f"acc {row['test_in_scope_accuracy_without_rejection']:.3f}", flush=True)
        _print_scores(row)


def _print_scores(row: dict[str, Any]) -> None:
    for name, r in row.items():
        if isinstance(r, dict) and "test_curve" in r:
            cal = r["calibrated_at_validation_accuracy"]
            print(f"  {name:24s} oracle@0.9 {r['oracle_recall_at_in_scope_accuracy_0.9']}  val-acc-calibrated "
                  + " ".join(f"{c['validation_in_scope_accuracy']}:{c['in_scope_accuracy']:.3f}/"
                             f"{c['out_of_scope_recall']:.3f}" for c in cal), flush=True)


def _loadavg() -> list[str]:
    with open("/proc/loadavg", encoding="utf-8") as fh:
        return fh.read().split()[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="ce,lmcl,lmcl_oe", help="ce, lmcl, lmcl_oe, lmcl_supcon or frozen")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--backbone", default="minilm-l6", help="text encoder fine-tuned: minilm-l6 or bge-small")
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--max-per-label", type=int, default=None, help="training rows per intent (seeded)")
    parser.add_argument("--limit", type=int, default=None, help="smoke run: rows per intent; writes nothing")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder for each run's features and logits (.npz); a run found there is re-scored")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on the shared 2-core machine, 2 threads ran a batch ~7x slower)")
    parser.add_argument("--chat", default="", help="comma-separated chat intent methods to measure on the run's "
                                                   "features (frozen: the chat layer as shipped), key " + CHAT_KEY)
    parser.add_argument("--frozen", default="", help="comma-separated chat encoders (minilm-l6, bge-small): frozen "
                                                     "features only, the scores, the chat layer and the examples "
                                                     "protocol; keys out_of_scope_frozen_encoders, "
                                                     "out_of_scope_examples_protocol")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.frozen:
        frozen_main(args.frozen.split(","), (args.chat or "probability,nearest,distance").split(","), args.cache)
        return
    data = load(args.limit, args.max_per_label)
    path = RESULTS / ("chat.json" if not args.limit else "smoke_intents_oos.json")
    for recipe in args.recipes.split(","):
        key = recipe if args.max_per_label is None else f"{recipe}_{args.max_per_label}_per_intent"
        key += "" if args.epochs == 2 or recipe == "frozen" else f"_{args.epochs}_epochs"
        key += "" if args.backbone == "minilm-l6" else f"_{args.backbone}"
        cached = None if args.cache is None else args.cache / f"{key}{'_smoke' if args.limit else ''}.npz"
        load0 = _loadavg()
        if cached is not None and cached.is_file():
            run = _read_cache(cached)
        else:
            run = train(recipe, data, epochs=args.epochs, max_length=args.max_length, seed=SEED,
                        backbone_name=args.backbone)
            run.update({"loadavg_start": load0, "loadavg_end": _loadavg()})
            if cached is not None:
                _write_cache(cached, run)
        row = {"recipe": recipe, "command": "AIFORGE_SHARED_DATA=/work/shared/data python bench/intents_oos.py "
               f"--recipes {recipe} --epochs {args.epochs} --max-length {args.max_length}"
               + (f" --max-per-label {args.max_per_label}" if args.max_per_label else "")
               + (f" --threads {args.threads}" if args.threads != 1 else "")
               + (f" --backbone {args.backbone}" if args.backbone != "minilm-l6" else ""),
               "backbone": args.backbone, "epochs": args.epochs, "max_per_label": args.max_per_label,
               "torch_threads": args.threads,
               "max_length": args.max_length,
               "train_seconds": run["train_seconds"], "epoch_end_seconds": run["epoch_end_seconds"],
               "embed_seconds": run["embed_seconds"],
               "train_rows": run["train_rows"], "synthetic_outliers": run["n_outliers"], "history": run["history"],
               **evaluate(run, data), "loadavg_start": run.get("loadavg_start", load0),
               "loadavg_end": run.get("loadavg_end", _loadavg())}
        results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        block = results.get(KEY) or {}
        block.update({"note": __doc__.split("\n\n")[2].replace("\n", " "), "unknown_intents": data["unknown"],
                      "known_intents": len(data["known"]), "train": len(data["train"][0]),
                      "validation": len(data["validation"][0]), "test_in_scope": len(data["test_in"][0]),
                      "test_out_of_scope": len(data["test_out"]),
                      "machine": machine()})
        block.setdefault("runs", {})[key] = row
        results[KEY] = block
        if args.chat:
            chat = results.get(CHAT_KEY) or {}
            chat.update({"note": chat_layer.__doc__.replace("\n", " ").replace("    ", " "),
                         "features_of_run": key, "unknown_intents": data["unknown"], "machine": machine()})
            chat.setdefault("runs", {})[key] = {"command": row["command"] + f" --chat {args.chat}",
                                                **chat_layer(run, data, args.chat.split(","))}
            results[CHAT_KEY] = chat
        path.write_text(json.dumps(results, indent=2), encoding="utf-8")
        print(key, f"train {run['train_seconds']:.0f}s epochs at {run['epoch_end_seconds']} "
              f"acc {row['test_in_scope_accuracy_without_rejection']:.3f}", flush=True)
        _print_scores(row)


def _write_cache(path: Path, run: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{part}_{i}": run["embed"][part][i] for part in run["embed"] for i in (0, 1)}
    meta = {k: v for k, v in run.items() if k != "embed"}
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def _read_cache(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        run: dict[str, Any] = json.loads(str(z["meta"]))
        run["embed"] = {part: (z[f"{part}_0"], z[f"{part}_1"])
                        for part in ("train", "validation", "test_in", "test_out")}
    return run


if __name__ == "__main__":
    main()
