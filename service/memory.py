"""Keeping a worker's memory flat: where it goes under load, and the bounds the engine sets.

What grows a CPU torch worker's RSS while it serves (the soak in benchmarks/RESULTS.md measures the result):

* glibc malloc arenas: every thread that allocates (the inference thread, oneDNN/OpenMP workers, the
  tokenizer threads of the event loop's pool) may get its own arena (up to 8 x cores), and freed activation
  buffers stay in them. `configure_allocator` caps arenas at 2 (the MALLOC_ARENA_MAX setting, applied with
  mallopt so it holds without an environment variable) and fixes the mmap threshold at 64 MiB (glibc's
  dynamic threshold otherwise moves with every large free). A lower threshold returns activations to the
  kernel sooner but pays a page fault per 4 KiB on every forward pass: measured in-process on the JinaBERT
  proxy (2 cores, fp32, 2,048-token batches), W2 p50 542 ms at 4 MiB, 480 ms at 16 MiB, 404 ms at 32 MiB,
  378-392 ms at 64 MiB, against 425 ms with glibc's defaults, for a peak RSS within the noise of each other
  (603-636 MiB); what stays on the heap after a burst is trimmed when the worker goes idle (below).
* Per-shape caches: oneDNN keeps a JIT-compiled primitive per distinct matmul shape (batch x padded length varies
  with every request), up to 1,024 of them, and ideep (torch's oneDNN layer, which runs the packed Linear layers of
  service/backends/packed_linear.py) keeps its own per-shape objects holding them, up to 1,024 too; both are large
  (measured: a bf16 Linear 384 -> 1536 fed 200 distinct row counts keeps +118 MiB after malloc_trim with the default
  cache, +79 MiB with 64 entries). `configure_allocator` caps both (LRU) at `ONEDNN_CACHE_CAPACITY[precision]`
  unless ONEDNN_PRIMITIVE_CACHE_CAPACITY / LRU_CACHE_CAPACITY are already set: 8 for fp32, 64 for bf16, whose packed
  layers round their row counts up to a multiple of 64 (service/backends/packed_linear.py: a bf16 primitive costs
  milliseconds to compile again, an fp32 one little), so that the shapes one 1,024-token batch budget produces (16
  row counts x 4 layer shapes) stay cached. Measured in-process on the JinaBERT proxy, packed Linear layers, peak
  RSS (VmHWM) over two rounds of the benchmark's 8 W1 + 8 W2 requests, time per round: fp32 745-792 MiB at 64 /
  1,024 (the previous cap), 615 MiB at 16 / 16, 551 MiB at 8 / 8, 533-561 MiB at 4 / 4, for the same 25-26 s; bf16
  571-590 MiB at 64 / 1,024, 496 MiB at 8 / 8 (18.5 vs 19.2-20.0 s) on exact row counts (measured on AMD EPYC; on an
  Intel Xeon with AMX, bf16 with padded rows and 64 entries: 428 MiB against 406 at 8 exact, and 18 % faster on W2).
  With the caches capped, distinct sequence lengths no longer hold memory: the torch engine pads each batch to its
  longest pair exactly (service.engine.factory.PAD_MULTIPLES; ONNX Runtime keeps multiples of `PAD_MULTIPLE`, 16).
  bf16 weights are converted once (service/backends/bf16.py), so autocast's cast copies of the weights never exist.
* What is left free on the heap after a burst: `release_memory` (malloc_trim) hands it back when the
  inference thread goes idle.
* Weights a conversion replaced: transformers maps model.safetensors into memory and the fp32 weights live in
  that mapping (the pages a forward touched count in RSS). After bf16's conversion the fp32 copies of the
  converted layers are dead, but the mapping stays (the embeddings still live in it) and so do their pages:
  `drop_file_pages` gives them back (measured on the JinaBERT proxy: 27 MiB, bf16 would otherwise need more
  memory than fp32). The same holds for the Linear weights packed for oneDNN (36 MiB in fp32).

Linux/glibc only; elsewhere every call is a no-op that says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time

logger = logging.getLogger("service.memory")

PAD_MULTIPLE = 16
ARENA_MAX = 2
MMAP_THRESHOLD = 64 * 1024 * 1024  # the torch flavour: its activations are allocated and freed per operator
# The ONNX flavour: ONNX Runtime serves activations from its own arena (allocated once, reused), so a low threshold
# costs it nothing per forward pass and hands the arena's growth steps back when freed; its 512 MB footprint
# (infra/sizing.py) was measured with it.
ARENA_MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_INTERVAL_S = 1.0  # at most one malloc_trim per second (it walks the heap)
ONEDNN_CACHE_CAPACITY = {"fp32": 8, "bf16": 64}  # by the precision the torch engine serves (docstring)
# Read from the environment when the first primitive (oneDNN) / the first cached op (ideep) is created.
ONEDNN_CACHE_VARIABLES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "onednn_primitive_cache",
                          "LRU_CACHE_CAPACITY": "ideep_op_cache"}

_MADV_DONTNEED = 4  # sys/mman.h (Linux)

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

_libc = None
_last_trim = 0.0


def _glibc():
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.mallopt  # noqa: B018 - AttributeError on non-glibc C libraries
            libc.malloc_trim  # noqa: B018
            _libc = libc
        except (OSError, AttributeError):
            _libc = False
    return _libc or None


def configure_allocator(arena_max: int = ARENA_MAX, mmap_threshold: int = MMAP_THRESHOLD,
                        cache_capacity: int = ONEDNN_CACHE_CAPACITY["fp32"]) -> dict[str, object]:
    """Cap malloc arenas and fix the mmap threshold for this process (before the inference threads start), and
    cap oneDNN's and ideep's per-shape caches at `cache_capacity` (before the first primitive is created).
    Returns what was applied (shown in /info)."""
    # Library knobs, not service settings: oneDNN and ideep only read them from the environment, once (an
    # operator's value wins, and so does the value of an earlier call in this process).
    onednn = {}
    for variable, key in ONEDNN_CACHE_VARIABLES.items():
        os.environ.setdefault(variable, str(cache_capacity))
        onednn[key] = int(os.environ[variable])
    libc = _glibc()
    if libc is None:
        return {"allocator": "not glibc: left as is", **onednn}
    ok = all([libc.mallopt(_M_ARENA_MAX, int(arena_max)) == 1,
              libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1,
              libc.mallopt(_M_TRIM_THRESHOLD, int(mmap_threshold)) == 1])
    if not ok:
        logger.warning("mallopt refused the allocator settings; memory may grow under load")
    return {"allocator": "glibc", "arena_max": arena_max, "mmap_threshold_bytes": mmap_threshold,
            "trim_when_idle": True, "applied": ok, **onednn}


def release_memory(*, force: bool = False) -> bool:
    """malloc_trim(0): return free heap memory to the kernel (rate-limited unless `force`)."""
    global _last_trim
    libc = _glibc()
    if libc is None:
        return False
    now = time.monotonic()
    if not force and now - _last_trim < TRIM_INTERVAL_S:
        return False
    _last_trim = now
    return bool(libc.malloc_trim(0))


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def file_mappings(maps: str | None = None) -> list[tuple[int, int]]:
    """(start, end) of this process's file-backed mappings, from /proc/self/maps (or `maps`, its text)."""
    if maps is None:
        try:
            with open("/proc/self/maps") as handle:
                maps = handle.read()
        except OSError:
            return []
    found = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/") and fields[4] != "0":
            start, end = (int(part, 16) for part in fields[0].split("-"))
            found.append((start, end))
    return found


def whole_pages(ranges: list[tuple[int, int]], keep: list[tuple[int, int]], mappings: list[tuple[int, int]],
                page: int) -> list[tuple[int, int]]:
    """The (address, length) spans of whole pages that lie inside one of `ranges` ((address, bytes) each) and
    inside a file mapping, and that share no byte with any range of `keep`."""
    spans = []
    for address, size in ranges:
        first = round_up(address, page)
        last = (address + size) // page * page
        if last <= first or not any(start <= first and last <= end for start, end in mappings):
            continue
        cuts = [(first, last)]
        for kept_address, kept_size in keep:
            kept_first = kept_address // page * page
            kept_last = round_up(kept_address + kept_size, page)
            cuts = [piece for lo, hi in cuts
                    for piece in ((lo, min(hi, kept_first)), (max(lo, kept_last), hi)) if piece[1] > piece[0]]
        spans.extend((lo, hi - lo) for lo, hi in cuts)
    return spans


def tensor_spans(tensors) -> list[tuple[int, int]]:
    """(address, bytes) of each non-empty tensor's data, for `drop_file_pages`. oneDNN's opaque (packed)
    tensors are skipped: they have no storage of their own, and live on the heap, never in a file mapping."""
    return [(t.data_ptr(), t.numel() * t.element_size()) for t in tensors
            if t.numel() and not getattr(t, "is_mkldnn", False)]


def drop_file_pages(replaced: list[tuple[int, int]], still_used: list[tuple[int, int]]) -> int:
    """Hand back the resident pages of data nothing reads any more (`replaced`: (address, bytes) of tensors that
    were converted or replaced; the caller still holds them, so their mapping cannot go away meanwhile).
    Only whole pages inside a file mapping (a safetensors mmap: private, so the kernel reads them back from the
    file if they were ever touched again) and outside every `still_used` range are dropped, with
    madvise(MADV_DONTNEED). Returns the bytes dropped (0 where this is not Linux/glibc)."""
    libc = _glibc()
    if libc is None:
        return 0
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    dropped = 0
    for address, length in whole_pages(replaced, still_used, file_mappings(), os.sysconf("SC_PAGE_SIZE")):
        if madvise(address, length, _MADV_DONTNEED) == 0:
            dropped += length
    return dropped


def padded_length(longest: int, limit: int | None = None, multiple: int = PAD_MULTIPLE) -> int:
    """`longest` rounded up to a multiple of `multiple`, never beyond `limit` (the model's max length)."""
    padded = round_up(max(1, longest), multiple)
    return min(padded, limit) if limit else padded
