# One image for the hallu driver and its Ray workers (GPU nodes; the driver runs fine on it too).
#   docker build -t ghcr.io/YOUR-ORG/hallu:0.1.0 .   &&   docker push ghcr.io/YOUR-ORG/hallu:0.1.0
# The versions are the ones the test suite ran with (CPU build there); Ray's version must be the
# same on every node and on the machine that submits jobs. Not built in this repository's CI
# (no docker there): build and smoke-test it before renting a cluster (infra/README.md).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 PATH=/opt/venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv openssh-client rsync ca-certificates \
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv

# Heavy, rarely changing layers first. torch's CUDA wheels bring their own CUDA libraries.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128
RUN pip install "ray[default]==2.60.0" transformers==5.24.0 tokenizers==0.23.3 \
        huggingface_hub==2.4.0 pyarrow==26.0.1 boto3==1.43.11 pydantic==2.13.4 hydra-core==1.3.8

WORKDIR /opt/hallu
COPY pyproject.toml README.md* ./
COPY hallu ./hallu
COPY conf ./conf
COPY jobs ./jobs
COPY infra ./infra
RUN pip install -e . && python -c "import hallu.run.ray, hallu.store.s3, hallu.run.jobs"

# Weights are staged per node at run time (infra/stage_weights.sh), never baked in.
CMD ["bash"]
