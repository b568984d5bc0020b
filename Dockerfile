# vqae on a CUDA PyTorch runtime: `docker build -t vqae .`, then
#   docker run --gpus all -v /data:/data -v $PWD/runs:/home/vqae/runs vqae \
#     train --config configs/base.yaml --data /data/BigEarthNet-S2-LMDB --run.dir runs/base
# The image's torch (CUDA 12.4 build) satisfies the project's torch range, so pip keeps it.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends tmux git util-linux \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/vqae
# dependencies first (cached while only the code changes), then the project itself
COPY pyproject.toml README.md ./
COPY vqae/__init__.py vqae/__init__.py
RUN pip install .
COPY vqae vqae
COPY configs configs
COPY anton_launcher slurm_launcher spawner.py ./
RUN pip install --no-deps . && chmod +x anton_launcher slurm_launcher spawner.py

RUN useradd --create-home --shell /bin/bash vqae
USER vqae
WORKDIR /home/vqae
RUN ln -s /opt/vqae/configs configs
ENV VQAE_CACHE=/home/vqae/.cache/vqae
ENTRYPOINT ["vqae"]
CMD ["--help"]
