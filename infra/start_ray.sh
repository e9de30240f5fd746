#!/usr/bin/env bash
# Start Ray on one node of a hallu cluster: `start_ray.sh head` or `start_ray.sh worker HEAD_IP`.
#
# Token authentication is on (RAY_AUTH_MODE=token); every node and the submitting laptop need the
# same RAY_AUTH_TOKEN. The dashboard and job server listen on 127.0.0.1 only: reach them through
# an SSH tunnel (ssh -N -L 8265:127.0.0.1:8265 USER@HEAD). GCS port 6379 must be open between the
# nodes only (private network / security group), never to the internet.
set -euo pipefail
role=${1:?usage: start_ray.sh head | worker HEAD_IP}
: "${RAY_AUTH_TOKEN:?export RAY_AUTH_TOKEN (generate once: python -c 'import secrets;print(secrets.token_hex(32))')}"
export RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ "$role" = head ]; then
  # The head runs the driver (CPU only) and GCS; keep it on non-preemptible capacity. It gets no
  # GPU resource, so worker actors (num_gpus=1) are never placed on it unless it has GPUs.
  ray start --head --port=6379 --dashboard-host=127.0.0.1 --dashboard-port=8265 \
    --num-gpus="${HEAD_GPUS:-$gpus}" --disable-usage-stats
else
  head=${2:?usage: start_ray.sh worker HEAD_IP}
  ray start --address="$head:6379" --num-gpus="$gpus" --disable-usage-stats
fi
