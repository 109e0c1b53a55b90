# retouch's HTTP service. Build:   docker build -t retouch .
#                       With SD:  docker build --build-arg EXTRAS=server,diffusion -t retouch-sd .
# Run with the documented /sd-inpaint setup: docker compose up (see compose.yaml).
FROM python:3.11-slim

ARG EXTRAS=server
# A CPU build of torch first when diffusion is wanted (the default index would pull CUDA).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN if echo "$EXTRAS" | grep -q diffusion; then \
        pip install --no-cache-dir --index-url "$TORCH_INDEX" "torch>=2.1"; \
    fi \
    && pip install --no-cache-dir ".[${EXTRAS}]"

# Models (`retouch models pull ...`) and job results live in volumes.
ENV RETOUCH_HOME=/data/models \
    RETOUCH_JOB_DIR=/data/jobs
VOLUME ["/data"]

RUN useradd --create-home retouch && mkdir -p /data && chown retouch /data
USER retouch
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"
CMD ["retouch", "serve", "--host", "0.0.0.0", "--port", "8000"]
