#!/usr/bin/env bash
# RunPod: run on every pod of an Instant Cluster (multi-node, private network between pods),
# using the hallu image (Dockerfile) as the pod template's container image.
#   head pod (Secure Cloud, on-demand: never an interruptible/spot pod):
#       ROLE=head  bash /opt/hallu/infra/runpod/bootstrap.sh
#   worker pods (interruptible is fine: Ray restarts their actors, lost shards are re-queued):
#       ROLE=worker HEAD_IP=<head's private IP> bash /opt/hallu/infra/runpod/bootstrap.sh
# Set RAY_AUTH_TOKEN, HF_TOKEN and the bucket's AWS_* as RunPod secrets: jobs get no credentials.
# Only SSH is exposed publicly; reach the dashboard with ssh -N -L 8265:127.0.0.1:8265 root@HEAD -p PORT.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# /workspace is the pod's volume: weights staged there survive a pod restart.
bash "$here/stage_weights.sh" "${MODEL:-meta-llama/Llama-2-13b-chat-hf}" /workspace/models
case "${ROLE:?set ROLE=head or ROLE=worker}" in
  head) bash "$here/start_ray.sh" head ;;
  worker) bash "$here/start_ray.sh" worker "${HEAD_IP:?set HEAD_IP}" ;;
  *) echo "ROLE must be head or worker" >&2; exit 2 ;;
esac
