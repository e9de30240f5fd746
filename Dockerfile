# One image for the hallu driver and its Ray workers (GPU nodes; the driver runs fine on it too).
#   docker build -t ghcr.io/YOUR-ORG/hallu:0.1.0 .   &&   docker push ghcr.io/YOUR-ORG/hallu:0.1.0
# hallu is installed from its wheel (configs, prompts and the toy model inside it), with the
# versions the test suite ran with (requirements-lock.txt, written by .ci/lock; CPU torch there,
# the CUDA build of the same torch version here). Ray's version must be the same on every node
# and on the machine that submits jobs.
FROM docker.io/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 PATH=/opt/venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv openssh-client rsync ca-certificates \
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv

# Heavy, rarely changing layers first. torch's CUDA wheels bring their own CUDA libraries.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
COPY requirements-lock.txt /tmp/requirements-lock.txt
# The runtime pins only (the lock's test tools are not needed in the image).
RUN grep -vE '^(#|pytest|moto|ruff)' /tmp/requirements-lock.txt > /tmp/runtime.txt \
    && pip install -r /tmp/runtime.txt "ray[default]" -c /tmp/runtime.txt

# Build the wheel in a throwaway stage-like step and install it (not editable, no source tree).
WORKDIR /opt/hallu
COPY pyproject.toml README.md ./
COPY hallu ./hallu
RUN pip wheel --no-deps -w /tmp/dist . && pip install -c /tmp/runtime.txt /tmp/dist/hallu-*.whl \
    && rm -rf /opt/hallu/hallu /tmp/dist \
    && cd / && python -c "import hallu.run.ray, hallu.store.s3, hallu.run.jobs_cli, hallu.conf" && hallu --help
# The cluster scripts stay as files (the job commands are `hallu jobs ...`, in the wheel).
COPY infra ./infra

# Weights are staged per node at run time (infra/stage_weights.sh), never baked in.
CMD ["bash"]
