#!/usr/bin/env bash
# The GPU checks of issues 4 and 5, in one short run on a CUDA node (about 5 minutes on an H100):
#   1. training throughput, mixed precision off and on, and the data loader (bench_training.py);
#   2. one-pass Grad-CAM against MONAI per cell and the plain forward (bench_gradcam.py);
#   3. real training of the classifier on a finished run's crop stores (train_on_crops.py),
#      once per argument: each is a set of train overrides, e.g. "norm=group epochs=30".
# Needs: python3 with torch (CUDA), numpy, pandas, pyarrow, scikit-learn, pyyaml, and MONAI
# (importable, or as a wheel in .whl/); a workflow run's results/crops and results/split.
# Writes everything it prints to ${OUT:-gpu_check}/gpu_check.log.
set -uo pipefail
out=${OUT:-gpu_check}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/workflow/lib${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, monai; print("torch", torch.__version__, "monai", monai.__version__)'

step() { echo; echo "=== $*"; local t0=$SECONDS; "$@"; echo "(exit $?, $((SECONDS - t0)) s)"; }
step python3 bench/bench_training.py --steps 30 --batch 32
step python3 bench/bench_training.py --steps 10 --batch 8 --crop 21 128 128 --workers 0 4 8
step python3 bench/bench_gradcam.py --device cuda --batch 64 --layer _blocks.2 --repeats 10
step python3 bench/bench_gradcam.py --device cuda --batch 16 --shape 21 128 128 --repeats 10
if [ -d results/crops ]; then
    for overrides in "$@"; do
        # shellcheck disable=SC2086 (one argument holds several KEY=VALUE words)
        step python3 bench/train_on_crops.py --device cuda --set $overrides
    done
fi
