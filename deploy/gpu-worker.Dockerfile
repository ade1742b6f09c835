# GPU worker image: Deno + the engine + onnxruntime-node with its CUDA 12 execution provider.
#
#   docker build -f deploy/gpu-worker.Dockerfile -t personalize-gpu-worker .
#   docker run --gpus all -e EDGE_URL=https://edge.example -e WORKER_TOKEN=... \
#     -v /srv/models:/models:ro personalize-gpu-worker
#
# The CUDA provider libraries are not in the npm package (too large); onnxruntime-node's install script fetches
# them from NuGet when ONNXRUNTIME_NODE_INSTALL=cuda12, so building needs network access. ORT 1.30's CUDA EP
# wants CUDA 12 and cuDNN 9, which the base image provides.

ARG DENO_VERSION=2.9.6
FROM denoland/deno:bin-${DENO_VERSION} AS deno

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
COPY --from=deno /deno /usr/local/bin/deno
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
  && rm -rf /var/lib/apt/lists/* \
  && useradd --create-home --uid 10001 worker
WORKDIR /app
ENV DENO_DIR=/app/.deno-cache

# Dependencies first (cached while only the code changes). The lockfile pins every npm package.
COPY deno.json deno.lock ./
ENV ONNXRUNTIME_NODE_INSTALL=cuda12
RUN deno install --frozen --allow-scripts=npm:onnxruntime-node \
  && test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime_providers_cuda.so \
  || (echo "the CUDA execution provider was not installed (ONNXRUNTIME_NODE_INSTALL=cuda12)" >&2 && exit 1)

# Only what a worker runs: the engine, the shared protocol schemas, the CLI.
COPY shared/ shared/
COPY gpu-worker/ gpu-worker/
COPY scripts/worker.ts scripts/worker.ts
RUN deno cache --frozen scripts/worker.ts gpu-worker/ort/runner_worker.ts \
  && chown -R worker /app

USER worker
# Configuration by environment: EDGE_URL, WORKER_TOKEN (required), MODELS_DIR, ONNX_EP; or by flags
# (`docker run ... personalize-gpu-worker --name gpu-3 --instances 2`, see scripts/worker.ts).
ENV MODELS_DIR=/models ONNX_EP=cuda
VOLUME ["/models"]
# Scratch space for training runs (checkpoints live on the edge; this is disposable).
ENV TMPDIR=/tmp
ENTRYPOINT ["deno", "run", "--allow-all", "--frozen", "scripts/worker.ts"]
