"""Benchmark harness: the seed-style server vs Infinity vs this service, side by side (issue 5).

`python -m benchmarks` (or `make bench`) runs it and writes benchmarks/RESULTS.md and results.json;
`python -m benchmarks.fidelity` checks a precision/backend option's scores against fp32 torch;
`python -m benchmarks.experiments` runs the in-process micro-experiments (attention path, bf16,
threads, padding) and the seed-path profile.
"""
