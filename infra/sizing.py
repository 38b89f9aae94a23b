"""Memory sizing: the one place that records what one service worker costs, per image flavour.

Everything that decides a memory limit or an instance size (the Docker `memory` limit, the Render plan,
Cloud Run's and Fargate's CPU/memory, the Blueprint, the validation at `pulumi preview`) reads these
numbers; nothing else hard-codes a footprint. The size tables themselves belong to the targets
(infra/targets/<name>.py): each picks the smallest of its sizes that holds `required_memory_mb()`.

How a footprint is measured (re-measure whenever the model, the pins or the defaults change), on an image built
from the Dockerfile (`docker build --target <runtime | runtime-onnx> -t <tag> .`; the image tests build both with
the JinaBERT-shaped test model), one worker, for every precision the flavour can pick:

    python -m benchmarks.soak --image <tag> --memory 2g --precision fp32 --precision bf16 --seconds 60
        # 60 s of mixed W1/W2 traffic at the capacity it measured first
    python -m benchmarks.flavours --soak 60
        # both flavours: 60 s of W1 (100 documents per request) from 2 clients, the slim one under --memory 512m

The worker footprint is the largest peak RSS (VmHWM) of ONE uvicorn worker those runs report (benchmarks/
RESULTS.md), rounded up to the next 50 MB. The headroom covers what does not scale with the worker count: the
uvicorn supervisor process, the health-check interpreter that Docker starts every interval, /tmp (a tmpfs,
charged to the container) and allocator slack.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar


@dataclass(frozen=True)
class Footprint:
    """What one image flavour costs in memory."""

    flavour: str  # the `imageFlavour` setting
    build_target: str  # the Dockerfile stage that builds it
    worker_mb: int  # peak RSS of one worker
    headroom_mb: int  # what does not scale with the worker count
    measured: bool  # False: a provisional figure, see its comment


FOOTPRINTS: dict[str, Footprint] = {
    # Measured 2026-12-01 in the `runtime` image built with the JinaBERT-shaped test model (same shapes as
    # jina-reranker-v1-tiny-en: 4 layers, hidden 384, 12 heads, ALiBi capped at 512), one worker, default batch
    # budgets, for each precision `auto` can pick (benchmarks/RESULTS.md):
    #   python -m benchmarks.soak (60 s, mixed W1/W2 at the measured capacity): peak RSS (VmHWM) of the worker,
    #     with the Linear layers packed for oneDNN (service/backends/packed_linear.py), its caches capped at 8 and
    #     1,024-token batches: fp32 543 MiB = 569 MB, bf16 527 MiB = 553 MB. Before (aten Linear, fp32 batches of
    #     1,536): fp32 548-599 MiB = 575-628 MB (four runs); bf16 538 MiB = 564 MB once it hands back the pages of
    #     the fp32 weights it converts (service/memory.py: drop_file_pages; 567-592 MiB = 595-621 MB before);
    #   python -m benchmarks.flavours --soak 60 (60 s of W1 only, 100 documents per request): fp32 605 MB (aten).
    # Again 2026-12-02, batches padded to their longest pair (service/engine/factory.py PAD_MULTIPLES), on an AMD
    # EPYC of another generation (Zen 5): soak fp32 540 MiB = 566 MB, bf16 520 MiB = 545 MB; flavours fp32 568 MB.
    # Again 2026-12-03 on an Intel Xeon with AMX, with bf16's packed layers padding their rows to multiples of 64
    # and its caches at 64 entries (service/memory.py): soak fp32 460 MiB = 482 MB, bf16 459 MiB = 481 MB.
    # Again 2026-12-03 on an AMD EPYC Zen 4 (AVX-512 BF16, no AMX), same code: soak fp32 455 MiB = 477 MB,
    # bf16 421 MiB = 441 MB, no failed request.
    # The largest, 628 MB, rounded up: 650 MB, kept until the new path has as many runs behind it.
    # (It was 800 MB while the image carried sentence-transformers:
    # transformers imports scikit-learn and SciPy whenever they are installed, 85 MiB per worker; bf16 then
    # peaked 73 MB above fp32, now at or below it. The first figure, 550 MB, was one request's cgroup peak, not
    # a soak.)
    "torch": Footprint("torch", "runtime", worker_mb=650, headroom_mb=150, measured=True),
    # Measured 2026-12-01 by `python -m benchmarks.flavours --soak 60` (benchmarks/RESULTS.md, flavours.json) on
    # the `runtime-onnx` image built with the same JinaBERT-shaped model (fused attention, fp32, 2,048-token
    # batches), hardened, under --memory 512m: after 60 s of W1 (100 documents of 50-300 words) from 2 clients,
    # the worker's peak RSS was 287-288 MB (VmHWM, two runs) and the container's 272-289 MB, no OOM kill; again
    # 2026-12-02 (Zen 5): worker 288 MB, container 379 MB (page cache included), no OOM kill.
    # Rounded up: 300 MB.
    # One worker needs 300 + 150 = 450 MB: Render `starter` (512 MB) holds it.
    "onnx": Footprint("onnx", "runtime-onnx", worker_mb=300, headroom_mb=150, measured=True),
}
FLAVOURS: tuple[str, ...] = tuple(FOOTPRINTS)
DEFAULT_FLAVOUR = "torch"

# The torch figures under their historical names (the torch image is the default flavour).
WORKER_FOOTPRINT_MB = FOOTPRINTS["torch"].worker_mb
HEADROOM_MB = FOOTPRINTS["torch"].headroom_mb
# The footprints above were taken at this RERANK_MAX_LENGTH. Attention memory grows with the square of
# the sequence length, so a larger cap needs a new measurement (preview warns about it).
FOOTPRINT_MEASURED_AT_MAX_LENGTH = 512


def footprint(flavour: str = DEFAULT_FLAVOUR) -> Footprint:
    return FOOTPRINTS[flavour]


def required_memory_mb(workers: int, flavour: str = DEFAULT_FLAVOUR) -> int:
    """The smallest memory limit (MB) that holds `workers` workers plus the fixed headroom."""
    fp = FOOTPRINTS[flavour]
    return workers * fp.worker_mb + fp.headroom_mb


def max_workers_for(memory_mb: int, flavour: str = DEFAULT_FLAVOUR) -> int:
    """How many workers fit in `memory_mb` (0 when not even one does)."""
    fp = FOOTPRINTS[flavour]
    return max(0, math.floor((memory_mb - fp.headroom_mb) / fp.worker_mb))


def need_text(workers: int, flavour: str = DEFAULT_FLAVOUR) -> str:
    """`2 workers x 550 MB + 150 MB headroom`: the rule, for error messages."""
    fp = FOOTPRINTS[flavour]
    plural = "s" if workers != 1 else ""
    return f"{workers} worker{plural} x {fp.worker_mb} MB + {fp.headroom_mb} MB headroom"


@dataclass(frozen=True)
class Size:
    """One instance size of a platform's size table (a Render plan, a Fargate CPU/memory pair, ...).
    Prices are list prices at the date the table records: check the platform's pricing page."""

    name: str  # the value the platform's API takes
    memory_mb: int
    cpus: float
    usd_per_month: float | None = None  # list price of one instance running a full month


S = TypeVar("S", bound=Size)


def smallest_fitting(sizes: Iterable[S], memory_mb: int, cpus: float | None = None) -> S | None:
    """The first size (tables are ordered smallest first) with at least `memory_mb` and `cpus`."""
    for size in sizes:
        if size.memory_mb >= memory_mb and (cpus is None or size.cpus >= cpus):
            return size
    return None


def round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def names(sizes: Sequence[Size]) -> str:
    return ", ".join(size.name for size in sizes)
