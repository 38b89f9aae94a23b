"""`python -m benchmarks` / `python benchmarks/run.py`: run the benchmark, write RESULTS.md + results.json.

    python -m benchmarks                          # full run on the 33M JinaBERT-shaped proxy (built once)
    python -m benchmarks --model-path DIR         # the same on a real model directory
    python -m benchmarks --smoke --out-dir /tmp/b # tiny model, tiny workload (what the smoke test runs)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import service_env
from benchmarks.bench import CONTENDER_ORDER, Plan, RunConfig, run
from benchmarks.servers import BENCH_DIR, PROJECT_ROOT, WORK_DIR

SMOKE_MODEL_ARGS = {"max_position_embeddings": 512}  # the tiny AliBERT (hidden 32, 2 layers), small buffer


def resolve_model(args: argparse.Namespace) -> tuple[Path, str]:
    if args.model_path:
        path = Path(args.model_path).expanduser().resolve()
        if not (path / "config.json").is_file():
            raise SystemExit(f"--model-path {path} has no config.json")
        return path, f"model at {path}"
    from tests.support.model_factory import JINA_TINY_DIMS, cached_model

    if args.smoke:
        return cached_model("alibi", args.model_cache, **SMOKE_MODEL_ARGS).resolve(), \
            "tiny AliBERT test model (hidden 32, 2 layers, random weights)"
    return cached_model("alibi", args.model_cache, **JINA_TINY_DIMS).resolve(), \
        "JinaBERT-shaped proxy of jina-reranker-v1-tiny-en"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", help="a model directory (e.g. the real jina-reranker-v1-tiny-en); "
                                             "default: the JinaBERT-shaped proxy built by tests/support")
    parser.add_argument("--model-cache", type=Path, default=WORK_DIR / "models",
                        help="where the proxy model is built once (default benchmarks/.work/models)")
    parser.add_argument("--contenders", default=",".join(CONTENDER_ORDER),
                        help="comma-separated subset of " + ",".join(CONTENDER_ORDER) + " (default: all)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny model and workload, no waiting for a quiet machine (the smoke test)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR, help="where RESULTS.md and results.json go")
    parser.add_argument("--no-infinity-install", action="store_true",
                        help="do not create benchmarks/.work/infinity-venv if it is missing")
    parser.add_argument("--service-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the service (repeatable), e.g. RERANK_PRECISION=fp32")
    service_env.add_argument(parser)
    parser.add_argument("--quiet-load", type=float, default=0.7, help="wait until the 1-min load is below this")
    parser.add_argument("--max-wait", type=float, default=600.0, help="longest wait for a quiet machine (s)")
    parser.add_argument("--w1-rounds", type=int)
    parser.add_argument("--w2-rounds", type=int)
    parser.add_argument("--w3-rounds", type=int)
    parser.add_argument("--w3-requests", type=int, help="requests per W3 burst")
    return parser.parse_args(argv)


def native_verdict(model_path: Path) -> None:
    """The proxy's native.json, taken as the image build takes the real model's (service/native_gate.py), once:
    (c) and (c3) then serve the native implementation, as the image does."""
    from service import native_gate

    try:
        if native_gate.read_native_verdict(model_path) is not None:
            return
    except native_gate.NativeVerdictError:
        pass
    print(f"native implementation check on {model_path.name} (once; written next to the proxy)", flush=True)
    native_gate.check_in_child(model_path, log=print, warn=lambda msg: print(msg, file=sys.stderr))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    contenders = tuple(c.strip() for c in args.contenders.split(",") if c.strip())
    unknown = set(contenders) - set(CONTENDER_ORDER)
    if unknown:
        raise SystemExit(f"unknown contender(s) {sorted(unknown)}; choose from {CONTENDER_ORDER}")
    if "service" in contenders and not (PROJECT_ROOT / "service" / "main.py").is_file():
        print("service/main.py does not exist yet: measuring without (c) this service", file=sys.stderr)
        contenders = tuple(c for c in contenders if c != "service")

    plan = Plan.smoke() if args.smoke else Plan()
    if args.w3_requests:
        plan = replace(plan, sizes=replace(plan.sizes, w3_requests=args.w3_requests))
    plan = replace(plan, **{k: v for k, v in {"w1_rounds": args.w1_rounds, "w2_rounds": args.w2_rounds,
                                               "w3_rounds": args.w3_rounds}.items() if v})

    infinity_status = None
    if "infinity" in contenders:
        from benchmarks import infinity_env

        if args.no_infinity_install and not infinity_env.is_installed():
            status = infinity_env.InfinityStatus(False, str(infinity_env.INFINITY_VENV),
                                                 infinity_env.INFINITY_REQUIREMENT,
                                                 "not installed (--no-infinity-install)")
        else:
            print("checking Infinity's venv (benchmarks/.work/infinity-venv)...", flush=True)
            status = infinity_env.ensure()
        infinity_status = asdict(status)
        if not status.ok:
            print(f"Infinity is not available: {status.detail}", file=sys.stderr)
            contenders = tuple(c for c in contenders if c != "infinity")

    model_path, label = resolve_model(args)
    config_form = None
    if not args.model_path and "service-config" in contenders:  # the proxy's twin: config-form attention code
        from tests.support.model_factory import JINA_TINY_DIMS, cached_model

        dims = SMOKE_MODEL_ARGS if args.smoke else JINA_TINY_DIMS
        config_form = cached_model("alibi", args.model_cache, attention_form="config", **dims).resolve()
    if not args.model_path and any(key.startswith("service") for key in contenders):
        native_verdict(model_path)
    service_python = sys.executable
    if any(key.startswith("service") for key in contenders):
        # a smoke run checks the harness, not the numbers: no venv to build for it unless asked for
        service_python = service_env.resolve("current" if args.smoke and args.service_python == "venv"
                                             else args.service_python)
    extra_env = dict(item.split("=", 1) for item in args.service_env)
    config = RunConfig(model_path=model_path, model_label=label, contenders=contenders, plan=plan,
                       quiet_load=args.quiet_load, quiet_wait_s=0.0 if args.smoke else args.max_wait,
                       service_env=extra_env, config_form_model_path=config_form,
                       service_python=service_python,
                       log_dir=WORK_DIR / ("logs-smoke" if args.smoke else "logs"),
                       infinity_status=infinity_status)
    results = run(config, log=lambda msg: print(msg, flush=True))
    if infinity_status and "infinity" not in contenders:
        results["contenders"]["infinity"] = {"label": "(b) Infinity", "status": "failed", "command": "",
                                             "env": {}, "error": f"not installed: {infinity_status['detail']}"}

    from benchmarks import report

    json_path, md_path = report.write(results, args.out_dir)
    print(f"wrote {md_path} and {json_path}")
    for row in report.table_rows(results):
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())

