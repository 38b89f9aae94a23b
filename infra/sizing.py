"""Memory sizing: the one place that records what one service worker costs, and the Render plans.

Everything that decides a memory limit or an instance type (the Docker `memory` limit, the Render
plan, the Blueprint, the validation at `pulumi preview`) reads these numbers; nothing else hard-codes
a size.

How WORKER_FOOTPRINT_MB is measured (re-measure whenever the model, the pins or the defaults change):

    docker run -d --name rr-measure -p 8000:8000 -e WEB_CONCURRENCY=1 <image built from the Dockerfile>
    # wait for `docker inspect -f '{{.State.Health.Status}}' rr-measure` == healthy, then send one
    # /v1/rerank request with 100 documents of ~200 words each (RERANK_MAX_LENGTH=512)
    docker exec rr-measure sh -c 'cat /sys/fs/cgroup/memory.peak'   # cgroup v2 peak, bytes

The footprint is the peak RSS of ONE uvicorn worker (model loaded, warmed up, after serving that
100-document request), rounded up to the next 50 MB. HEADROOM_MB covers what does not scale with the
worker count: the uvicorn supervisor process, the health-check interpreter that Docker starts every
interval, /tmp (a tmpfs, charged to the container) and allocator slack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Measured 2026-11-25 with the procedure above on the image built from the Dockerfile with the
# JinaBERT-shaped test model (same shapes as jina-reranker-v1-tiny-en: 4 layers, hidden 384, 12 heads,
# ALiBi capped at 512, fp32): 501 MB cgroup peak serving 100 documents x 512 tokens with
# RERANK_BATCH_TOKENS=4096 (tests/image/test_image.py prints it on every run). Rounded up: 550 MB.
WORKER_FOOTPRINT_MB = 550
HEADROOM_MB = 150
# The footprint above was taken at this RERANK_MAX_LENGTH. Attention memory grows with the square of
# the sequence length, so a larger cap needs a new measurement (preview warns about it).
FOOTPRINT_MEASURED_AT_MAX_LENGTH = 512


def required_memory_mb(workers: int) -> int:
    """The smallest memory limit (MB) that holds `workers` workers plus the fixed headroom."""
    return workers * WORKER_FOOTPRINT_MB + HEADROOM_MB


def max_workers_for(memory_mb: int) -> int:
    """How many workers fit in `memory_mb` (0 when not even one does)."""
    return max(0, math.floor((memory_mb - HEADROOM_MB) / WORKER_FOOTPRINT_MB))


@dataclass(frozen=True)
class RenderPlan:
    """A Render web-service instance type. Prices and sizes are list prices: check render.com/pricing."""

    api_name: str  # the Render API / pulumi-render value (WebServiceDetailsCreatePlan)
    blueprint_name: str  # the value render.yaml uses
    memory_mb: int
    cpus: float
    usd_per_month: int


# Smallest first. The plan for a stack is the smallest one whose memory holds `memoryMb`.
RENDER_PLANS: tuple[RenderPlan, ...] = (
    RenderPlan("starter", "starter", 512, 0.5, 7),
    RenderPlan("standard", "standard", 2048, 1, 25),
    RenderPlan("pro", "pro", 4096, 2, 85),
    RenderPlan("pro_plus", "pro plus", 8192, 4, 175),
)
RENDER_PLANS_BY_NAME = {plan.api_name: plan for plan in RENDER_PLANS}


def smallest_render_plan(memory_mb: int, cpus: float | None = None) -> RenderPlan | None:
    """The smallest plan with at least `memory_mb` of memory (and `cpus`, when given); None if none."""
    for plan in RENDER_PLANS:
        if plan.memory_mb >= memory_mb and (cpus is None or plan.cpus >= cpus):
            return plan
    return None
