#!/usr/bin/env bash
# One-shot check on a lent GPU machine (issue 13): the engine on a Llama-2-13b-shaped fp16 model
# (`python -m hallu.bench --gpu`), then the CPU baselines bench on the same box for comparison.
# Everything printed goes to $OUT/gpu_check.log; numbers to $OUT/*.json. Hard limit: 540 s.
#   OUT=/tmp/out bash benchmarks/gpu_check.sh
set -u
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

steps() {
  date -u
  uptime
  nproc
  nvidia-smi || echo "nvidia-smi: not found"
  python -c "import torch" 2>/dev/null || pip install torch==2.13.0
  python -c "import torch, transformers, sys
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'transformers', transformers.__version__, 'gpus', torch.cuda.device_count(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda')"
  git log --oneline -1 || true
  # 1. The 13b-shaped model (about 26 GB of fp16 weights, built on the GPU), 4 pairs x 64 tokens.
  if ! timeout 300 python -m hallu.bench --gpu --json "$OUT/gpu.json" \
      --calibration "$OUT/calibration.json"; then
    echo "=== 13b-shaped run failed (exit above); retrying with 8 layers, 2 pairs"
    timeout 120 python -m hallu.bench --gpu --gpu-layers 8 --gpu-pairs 2 --repeats 1 \
      --json "$OUT/gpu_8layers.json" --calibration none
  fi
  date -u
  # 2. A replica split over cuda + cpu equals the unsplit one (and the CPU placement tests).
  timeout 90 python -m pytest -q -p no:cacheprovider tests/test_placement.py -rs
  # 3. CPU baselines on this box, 2 threads as in docs/benchmarks.md (engine, naive batched
  #    across pairs, TransformerLens when installed, naive one pair per forward).
  timeout 180 python -m hallu.bench --repeats 3 --threads 2 --naive-pairs 4 \
    --json "$OUT/cpu.json" || echo "=== CPU bench did not finish (exit $?)"
  uptime
  date -u
}
export -f steps
export OUT
timeout 540 bash -c steps
echo "gpu_check exit $?"
