# Production image of the reranker service: CPU-only torch, the model baked in, no network at run time.
#
#   docker build -t reranker .                                  # real build: Hub + PyTorch CPU index + PyPI
#   docker build -t reranker \                                  # air-gapped build (docs/IMAGE.md)
#     --build-arg WHEEL_DIR=build/wheels --build-arg MODEL_DIR=models/jina-reranker-v1-tiny-en .
#
# Two runtime flavours from this one file (docs/IMAGE.md):
#   --target runtime       (the default, last stage): CPU torch + transformers, every backend/precision
#   --target runtime-onnx  torch-free: ONNX Runtime + tokenizers serving the model exported (or the repository's
#                          ONNX graph when it matches) and checked against torch in the model-onnx stage
#
# Stages: python (base + Debian's python3) -> deps (venv) -> model (download + offline proof)
#         -> deps-onnx (slim venv), deps-export (+ onnx), model-onnx (ONNX graph, fidelity gate) -> runtime-onnx
#         -> runtime.
# Works with the classic builder and BuildKit alike (no RUN --mount). BuildKit builds only the stages the target
# needs; the classic builder builds every stage before the target (the torch build then runs model-onnx too).

ARG BASE_IMAGE=debian:bookworm-slim

# ---- python: the base image plus Debian's python3 (3.11 on bookworm; the torch wheel is cp311) --------------
# Without the standard library's byte code (12 MB, Debian compiles all of it at install): each runtime stage
# compiles what it needs (the torch image all of it, the slim image what its build-time serve check imports).
FROM ${BASE_IMAGE} AS python
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && find /usr/lib/python3* -depth -type d -name __pycache__ -exec rm -rf {} +

# ---- deps: a virtualenv with CPU-only torch and the pinned requirements -------------------------------------
FROM python AS deps
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Where torch comes from: the PyTorch CPU index (its CPU wheel is ~190 MB; PyPI's default build pulls GBs of
# CUDA libraries). The rest comes from PYPI_INDEX_URL.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PYPI_INDEX_URL=https://pypi.org/simple
# Air-gapped: WHEEL_DIR is a folder of the build context holding every wheel (torch CPU included; see
# docs/IMAGE.md), installed with --no-index. COPY needs a source, so without it requirements/ stands in.
ARG WHEEL_DIR=
COPY requirements/ /build/requirements/
COPY ${WHEEL_DIR:-requirements} /build/wheels/
RUN if [ -n "$WHEEL_DIR" ]; then \
        pip install --no-index --find-links /build/wheels -r /build/requirements/service.txt; \
    else \
        pip install --index-url "$TORCH_INDEX_URL" -r /build/requirements/torch.txt \
        && pip install --index-url "$PYPI_INDEX_URL" -r /build/requirements/service.txt; \
    fi \
 && python -c "import torch; assert torch.version.cuda is None, 'torch is a CUDA build: ' + torch.__version__" \
 && rm -rf /build/wheels /root/.cache
# Not needed to serve (and no compiler to use them): torch's C++ headers and C++ test binaries, ~190 MB.
RUN torch_dir="$(python -c 'import os, torch; print(os.path.dirname(torch.__file__))')" \
 && rm -rf "$torch_dir/include" "$torch_dir/test" \
 && find "$torch_dir/bin" -type f ! -name torch_shm_manager -delete

# ---- model: download (or copy) the model into a plain directory and prove it loads offline ------------------
FROM deps AS model
ARG RERANK_MODEL=jinaai/jina-reranker-v1-tiny-en
ARG RERANK_MODEL_REVISION=aca45de6945b5dc6399abcd2a9c55ded5dc9111f
# Air-gapped / tests: MODEL_DIR is a model folder of the build context (e.g. made by
# scripts/download_reranker_local.py); it wins over RERANK_MODEL. Without it, requirements/ stands in for COPY.
ARG MODEL_DIR=
# Only what the download needs, so that service changes do not invalidate the (slow) download layer.
COPY service/__init__.py service/settings.py service/hub.py service/model_store.py service/model_download.py /app/service/
COPY service/engine/__init__.py service/engine/activation.py /app/service/engine/
COPY scripts/download_models.py /app/scripts/
COPY ${MODEL_DIR:-requirements} /build/model-src/
WORKDIR /app
# The offline proof loads the model with HF_HOME as at run time, which also fills $HF_HOME/modules with the
# remote code: the runtime image ships it ready, so a read-only container never writes there.
ENV HF_HOME=/opt/reranker/huggingface
RUN if [ -n "$MODEL_DIR" ]; then model=/build/model-src; else model="$RERANK_MODEL"; fi \
 && python scripts/download_models.py --model "$model" --revision "$RERANK_MODEL_REVISION" \
        --local-dir /opt/reranker/model --no-fidelity-gate \
 && mkdir -p /opt/reranker/huggingface/modules \
 && rm -rf /build/model-src /opt/reranker/huggingface/hub /root/.cache
# The precision gate on the baked-in weights (its own layer, after the download: code changes re-run only this):
# scores a fixed calibration set in fp32 and each reduced option and writes /opt/reranker/model/fidelity.json,
# which RERANK_PRECISION=auto follows at start-up (service/fidelity_gate.py).
COPY service/calibration.py service/fidelity_gate.py service/memory.py /app/service/
COPY service/backends/ /app/service/backends/
COPY service/engine/ /app/service/engine/
RUN HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python -m service.fidelity_gate /opt/reranker/model \
 && rm -rf /root/.cache
# The native JinaBERT implementation checked against the model's remote code on these weights (same token ids,
# scores within 1e-4): /opt/reranker/model/native.json lets the torch flavour serve it without importing
# transformers (cold start) when it passed; otherwise the remote code serves (service/native_gate.py).
COPY service/native_gate.py /app/service/
RUN HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python -m service.native_gate /opt/reranker/model \
 && rm -rf /root/.cache

# ---- deps-onnx: the slim flavour's virtualenv: ONNX Runtime, tokenizers and the API; no torch, no transformers
FROM python AS deps-onnx
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
ARG PYPI_INDEX_URL=https://pypi.org/simple
ARG WHEEL_DIR=
COPY requirements/ /build/requirements/
COPY ${WHEEL_DIR:-requirements} /build/wheels/
RUN if [ -n "$WHEEL_DIR" ]; then \
        pip install --no-index --find-links /build/wheels -r /build/requirements/service-onnx.txt; \
    else \
        pip install --index-url "$PYPI_INDEX_URL" -r /build/requirements/service-onnx.txt; \
    fi \
 && python -c "import importlib.util as u, sys; bad = [m for m in ('torch', 'transformers', 'sentence_transformers') if u.find_spec(m)]; sys.exit('the slim venv has ' + ', '.join(bad) if bad else 0)" \
 && rm -rf /build /root/.cache
# Not needed to serve, ~75 MB: pip and setuptools, hf-xet (huggingface_hub's Xet transfer agent: this image never
# downloads, and huggingface_hub falls back to HTTP without it), test suites, type stubs and C headers, numpy's
# f2py/distutils, ONNX Runtime's offline tools (transformers optimizer, quantization), and every .pyc (the runtime
# stage byte-compiles what the service imports).
RUN site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && python -m pip uninstall --yes --quiet hf-xet pip setuptools \
 && rm -rf "$site/numpy/f2py" "$site/numpy/distutils" "$site/numpy/_core/include" "$site/onnxruntime/transformers" \
           "$site/onnxruntime/quantization" "$site/onnxruntime/tools" /opt/venv/bin/f2py /opt/venv/bin/numpy-config \
 && find /opt/venv -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} + \
 && find /opt/venv -type f -name '*.pyi' -delete

# ---- deps-export: the torch venv plus the `onnx` package (exporter, graph optimiser, quantizer) --------------
FROM deps AS deps-export
ARG PYPI_INDEX_URL=https://pypi.org/simple
ARG WHEEL_DIR=
COPY ${WHEEL_DIR:-requirements} /build/wheels/
RUN if [ -n "$WHEEL_DIR" ]; then \
        pip install --no-index --find-links /build/wheels -r /build/requirements/onnx-export.txt; \
    else \
        pip install --index-url "$PYPI_INDEX_URL" -r /build/requirements/onnx-export.txt; \
    fi \
 && rm -rf /build/wheels /root/.cache

# ---- model-onnx: the folder the slim flavour serves, checked against torch (scripts/build_onnx_bundle.py) -----
# The repository's onnx/model.onnx when it matches (inputs, one logit, pairs of RERANK_MAX_LENGTH tokens, scores
# within the fidelity gate), else an export with the ALiBi cap; graph fusions and int8 only where the gate passes
# them; tokenizer.json as transformers configures it, checked id for id; the verdict in fidelity.json.
FROM deps-export AS model-onnx
ARG RERANK_MAX_LENGTH=512
COPY --from=model /opt/reranker /opt/reranker
COPY service/ /app/service/
COPY scripts/build_onnx_bundle.py /app/scripts/
WORKDIR /app
ENV HF_HOME=/opt/reranker/huggingface \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
RUN python scripts/build_onnx_bundle.py --model-dir /opt/reranker/model --out-dir /opt/reranker/onnx-model \
        --max-length "$RERANK_MAX_LENGTH" \
 && rm -rf /root/.cache

# ---- runtime-onnx: the torch-free image (ONNX Runtime + tokenizers) -----------------------------------------
FROM python AS runtime-onnx
ARG RERANK_MODEL=jinaai/jina-reranker-v1-tiny-en
ARG RERANK_MODEL_REVISION=aca45de6945b5dc6399abcd2a9c55ded5dc9111f
ARG RERANK_MAX_LENGTH=512
ARG VERSION=2.0.0
ARG IMAGE_SOURCE=
ARG IMAGE_REVISION=
LABEL org.opencontainers.image.title="reranker" \
      org.opencontainers.image.description="Cross-encoder reranker API (Cohere/Jina/TEI-compatible), ONNX Runtime, model baked in" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${IMAGE_SOURCE}" \
      org.opencontainers.image.revision="${IMAGE_REVISION}" \
      io.reranker.model.id="${RERANK_MODEL}" \
      io.reranker.model.revision="${RERANK_MODEL_REVISION}" \
      io.reranker.flavour="onnx"

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app

COPY --from=deps-onnx /opt/venv /opt/venv
COPY --from=model-onnx /opt/reranker/onnx-model /opt/reranker/model
COPY service/ /app/service/
WORKDIR /app
# Serve once at build time, as the image will (proof that the slim flavour loads and scores the baked-in model),
# which also byte-compiles exactly the modules the service imports; then the service's own code. Nothing listens
# here, so no credential is needed (RERANK_ALLOW_ANONYMOUS only for this command; the image keeps requiring one).
RUN RERANK_MODEL_PATH=/opt/reranker/model RERANK_FLAVOUR=onnx ENVIRONMENT=production RERANK_ALLOW_ANONYMOUS=true \
    /opt/venv/bin/python -c \
      "import uvicorn; uvicorn.Config('service.main:app').load(); from service.settings import load_settings; from service.engine.factory import build_engine; loaded = build_engine(load_settings()); loaded.engine.stop(); print('slim flavour serves:', loaded.info['backend'], loaded.info['precision'])" \
 && python3 -m compileall -q /app/service

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    RERANK_FLAVOUR=onnx \
    RERANK_MODEL=${RERANK_MODEL} \
    RERANK_MODEL_REVISION=${RERANK_MODEL_REVISION} \
    RERANK_MODEL_PATH=/opt/reranker/model \
    RERANK_MAX_LENGTH=${RERANK_MAX_LENGTH} \
    PORT=8000 \
    WEB_CONCURRENCY=1
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=4s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/api/health/' % os.environ.get('PORT', '8000'), timeout=3)"]
CMD ["python", "-m", "service"]

# ---- runtime ------------------------------------------------------------------------------------------------
FROM python AS runtime
ARG RERANK_MODEL=jinaai/jina-reranker-v1-tiny-en
ARG RERANK_MODEL_REVISION=aca45de6945b5dc6399abcd2a9c55ded5dc9111f
ARG VERSION=2.0.0
ARG IMAGE_SOURCE=
ARG IMAGE_REVISION=
LABEL org.opencontainers.image.title="reranker" \
      org.opencontainers.image.description="Cross-encoder reranker API (Cohere/Jina/TEI-compatible), model baked in" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${IMAGE_SOURCE}" \
      org.opencontainers.image.revision="${IMAGE_REVISION}" \
      io.reranker.model.id="${RERANK_MODEL}" \
      io.reranker.model.revision="${RERANK_MODEL_REVISION}"

# Numeric ids, so that Kubernetes' runAsNonRoot can check them.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app

COPY --from=deps /opt/venv /opt/venv
COPY --from=model /opt/reranker/model /opt/reranker/model
# Owned by the service user: a model mounted over RERANK_MODEL_PATH with other remote code can still be loaded.
COPY --from=model --chown=app:app /opt/reranker/huggingface /opt/reranker/huggingface
COPY service/ /app/service/
RUN python3 -m compileall -q /app/service "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"

WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HOME=/opt/reranker/huggingface \
    RERANK_MODEL=${RERANK_MODEL} \
    RERANK_MODEL_REVISION=${RERANK_MODEL_REVISION} \
    RERANK_MODEL_PATH=/opt/reranker/model \
    PORT=8000 \
    WEB_CONCURRENCY=1
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=4s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/api/health/' % os.environ.get('PORT', '8000'), timeout=3)"]
CMD ["python", "-m", "service"]
