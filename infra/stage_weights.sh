#!/usr/bin/env bash
# Download a model's weights once per node to local disk, so that each worker loads them from
# NVMe instead of the hub: `stage_weights.sh meta-llama/Llama-2-13b-chat-hf [/data/models]`.
# Then run with model.name_or_path=/data/models/Llama-2-13b-chat-hf (the same path on every node).
# Needs HF_TOKEN for gated models (accept the licence on the hub first). Idempotent: a finished
# download is marked and skipped.
set -euo pipefail
repo=${1:?usage: stage_weights.sh HUB_ID [DIR]}
root=${2:-/data/models}
dest="$root/${repo##*/}"
if [ -f "$dest/.staged" ]; then echo "already staged: $dest"; exit 0; fi
mkdir -p "$dest"
python - "$repo" "$dest" <<'PY'
import sys
from huggingface_hub import snapshot_download
repo, dest = sys.argv[1], sys.argv[2]
snapshot_download(repo, local_dir=dest, allow_patterns=["*.json", "*.safetensors", "tokenizer.model"])
PY
date -u > "$dest/.staged"
echo "staged $repo -> $dest ($(du -sh "$dest" | cut -f1))"
