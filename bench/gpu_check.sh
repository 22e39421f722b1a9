#!/usr/bin/env bash
# The GPU checks, in one short run on a CUDA node (about 6 minutes on an H100), at the
# paper's size (5x21x128x128) and the template's batch sizes (train 32, profile 32):
#   1. training throughput in float32, in bfloat16, and in bfloat16 with channels_last_3d,
#      with peak GPU memory, and the data loader's cells/s against the model's: the loader's
#      share of a step (bench_training.py);
#   2. the profile pass: the default map (integrated gradients, 8 steps) with and without the
#      audit, Grad-CAM (the paper's), the plain forward, cells/s and peak memory each
#      (bench_gradcam.py);
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
step python3 bench/bench_training.py --steps 10 --batch 32 --crop 21 128 128 --workers 0 4 8
step python3 bench/bench_training.py --steps 10 --batch 8 --crop 21 128 128 --workers 4
step python3 bench/bench_gradcam.py --device cuda --batch 32 --shape 21 128 128 --layer _blocks.4 --repeats 5
if [ -d results/crops ]; then
    for overrides in "$@"; do
        # shellcheck disable=SC2086 (one argument holds several KEY=VALUE words)
        step python3 tools/train_on_crops.py --device cuda --set $overrides
    done
fi
