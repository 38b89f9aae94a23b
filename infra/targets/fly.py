"""Target `fly`: Fly.io Machines, deployed with `fly deploy` from the generated fly.toml (infra/fly_config.py).

There is no Pulumi resource here on purpose: the Python `pulumi-flyio` provider has had no release
since 2025-03 and wraps a Machines API that has moved on, so a stack that depends on it would break
without warning. Fly's own config-as-code (fly.toml + `flyctl`) is the maintained path, so this
module validates the stack's settings and sizes the VM, fly_config.py renders them, and `pulumi up`
on a `fly` stack stops with a message that says exactly that.

Scaling on Fly: the proxy routes by requests in flight (soft/hard limits) and starts or stops
machines between `min_machines_running` and the machines that exist (`fly scale count`); it does
not scale on CPU, so `targetCpuPercent` is refused.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pulumi

from infra import sizing
from infra.config import Key, StackConfig, _Reader, refuse_scaling
from infra.spec import DeploymentSpec
from infra.targets._base import check_stop_grace, dns_label

NAME = "fly"
CONFIG_FILE = "fly.toml"  # what deploys this target (infra/fly_config.py renders it): not `pulumi up`

REGIONS = (
    "ams", "arn", "bom", "cdg", "dfw", "ewr", "fra", "gru", "iad", "jnb", "lax", "lhr", "nrt", "ord",
    "sin", "sjc", "syd", "yyz",
)  # fmt: skip
CPU_KINDS = ("shared", "performance")
_APP_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
AUTO_STOP = ("off", "stop", "suspend")
SUSPEND_MAX_MB = 2048  # Fly suspends (snapshots memory of) machines up to 2 GB only
CHECK_INTERVAL_SECONDS = 10
MAX_KILL_TIMEOUT_SECONDS = 300

# Throughput per CPU from benchmarks/RESULTS.md (2026-11-25, this service, W3: 8 concurrent clients x
# 20 documents of ~126 tokens per pair, 2 cores): 2.36 requests/s, i.e. 1.18 per CPU. The concurrency
# limits below are "requests one machine answers within N seconds" at that rate.
BENCH_REQUESTS_PER_SECOND_PER_CPU = 1.18
SOFT_LIMIT_SECONDS = 2  # past this much queued work, the proxy prefers another machine
HARD_LIMIT_SECONDS = 10  # past this, the proxy sends nothing more to this machine


@dataclass(frozen=True)
class VmPreset:
    """A Fly Machine CPU preset. List prices per month (iad), fly.io/docs/about/pricing."""

    name: str
    cpu_kind: str
    cpus: int
    min_mb: int
    max_mb: int
    step_mb: int
    usd_per_month_at_min: float

    def price(self, memory_mb: int) -> float:
        return round(self.usd_per_month_at_min + (memory_mb - self.min_mb) / 1024 * EXTRA_USD_PER_GB_MONTH, 2)


PRICES_AS_OF = "2026-12-01"
EXTRA_USD_PER_GB_MONTH = 5.0
VM_PRESETS: tuple[VmPreset, ...] = (
    VmPreset("shared-cpu-1x", "shared", 1, 256, 2048, 256, 1.94),
    VmPreset("shared-cpu-2x", "shared", 2, 512, 4096, 256, 3.89),
    VmPreset("shared-cpu-4x", "shared", 4, 1024, 8192, 256, 7.78),
    VmPreset("shared-cpu-8x", "shared", 8, 2048, 16384, 256, 15.55),
    VmPreset("performance-1x", "performance", 1, 2048, 8192, 1024, 32.19),
    VmPreset("performance-2x", "performance", 2, 4096, 16384, 1024, 64.39),
    VmPreset("performance-4x", "performance", 4, 8192, 32768, 1024, 128.78),
    VmPreset("performance-8x", "performance", 8, 16384, 65536, 1024, 257.56),
)
PRESETS_BY_NAME = {preset.name: preset for preset in VM_PRESETS}
SIZES = VM_PRESETS  # the size table of the plug-in interface

KEYS: tuple[Key, ...] = (
    Key("flyApp", "fly: app name (default `reranker-<stack>`; globally unique on Fly)"),
    Key("flyRegion", "fly: primary region, e.g. iad, fra, sin"),
    Key("flyCpuKind", "fly: `performance` (dedicated, default) or `shared` (throttled to a baseline)"),
    Key("flyVmSize", "fly: force a CPU preset, e.g. performance-1x, instead of deriving it"),
    Key("flyAutoStop", "fly: stop idle machines: `off`, `stop` or `suspend` (default: off at a fixed count)"),
)


@dataclass(frozen=True)
class Settings:
    service_name: str
    app: str
    region: str
    preset: VmPreset
    memory_mb: int
    auto_stop: str
    min_machines: int
    max_machines: int
    soft_limit: int
    hard_limit: int
    pulls_from_registry: bool = False  # `fly deploy` builds the Dockerfile on Fly's builder

    @property
    def usd_per_machine_month(self) -> float:
        return self.preset.price(self.memory_mb)


def vm_memory_mb(preset: VmPreset, memory_mb: int) -> int:
    """memoryMb rounded up to what the preset accepts (its minimum, then its step)."""
    return max(preset.min_mb, math.ceil(memory_mb / preset.step_mb) * preset.step_mb)


def smallest_preset(memory_mb: int, cpus: float, cpu_kind: str) -> VmPreset | None:
    for preset in VM_PRESETS:
        if preset.cpu_kind == cpu_kind and preset.cpus >= cpus and preset.max_mb >= memory_mb:
            return preset
    return None


def concurrency_limits(cpus: int, concurrency: int | None) -> tuple[int, int]:
    """(soft_limit, hard_limit) requests per machine, from the benchmark's throughput (or `concurrency`)."""
    rate = BENCH_REQUESTS_PER_SECOND_PER_CPU * cpus
    soft = max(1, math.ceil(rate * SOFT_LIMIT_SECONDS))
    hard = max(soft, math.ceil(rate * HARD_LIMIT_SECONDS))
    if concurrency is not None:
        hard = concurrency
        soft = min(soft, hard)
    return soft, hard


def parse(r: _Reader, common: StackConfig) -> Settings | None:
    default_app = dns_label(f"reranker-{common.stack}")
    app = r.string("flyApp", default_app) or default_app
    if not _APP_NAME.match(app):
        r.problem(
            "flyApp",
            f"={app!r} is not a Fly app name (lower-case letters, digits and '-', at most 63; globally "
            "unique): pulumi config set flyApp <your-name>-reranker",
        )
    region = r.string("flyRegion", "iad", REGIONS) or "iad"
    cpu_kind = r.string("flyCpuKind", "performance", CPU_KINDS) or "performance"
    scaling = common.scaling
    refuse_scaling(
        r,
        scaling,
        ("targetCpuPercent",),
        "Fly starts and stops machines by requests in flight (concurrency), not by CPU",
    )
    auto_default = "stop" if scaling.autoscaling else "off"
    auto_stop = r.string("flyAutoStop", auto_default, AUTO_STOP) or auto_default
    if auto_stop == "off" and scaling.autoscaling:
        r.problem(
            "flyAutoStop",
            f"=off keeps every machine running, so minInstances={scaling.min_instances} < "
            f"maxInstances={scaling.max_instances} would never scale in; pulumi config set flyAutoStop stop",
        )

    cpus = common.cpus if common.cpus is not None else float(common.workers)
    needed = common.required_memory_mb
    fp = sizing.footprint(common.image_flavour)
    forced = r.string("flyVmSize")
    preset: VmPreset | None
    if forced is not None:
        preset = PRESETS_BY_NAME.get(forced)
        fits = smallest_preset(max(needed, common.memory_mb), cpus, cpu_kind)
        fix = f"; pulumi config set flyVmSize {fits.name}" if fits else ""
        if preset is None:
            r.problem(
                "flyVmSize",
                f"={forced!r} is not a Fly CPU preset (one of: {', '.join(PRESETS_BY_NAME)}){fix}",
            )
        elif preset.max_mb < needed:
            r.problem(
                "flyVmSize",
                f"={forced} (at most {preset.max_mb} MB) cannot hold {common.workers} worker(s) x "
                f"{fp.worker_mb} MB + {fp.headroom_mb} MB headroom = {needed} MB{fix}",
            )
            preset = None
        elif preset.max_mb < common.memory_mb or (common.cpus is not None and preset.cpus < common.cpus):
            r.problem(
                "flyVmSize",
                f"={forced} ({preset.cpus} CPU, at most {preset.max_mb} MB) is smaller than "
                f"memoryMb={common.memory_mb}{f' and cpus={common.cpus:g}' if common.cpus else ''}{fix}",
            )
            preset = None
    else:
        preset = smallest_preset(common.memory_mb, cpus, cpu_kind)
        if preset is None:
            largest = [p for p in VM_PRESETS if p.cpu_kind == cpu_kind][-1]
            r.problem(
                "memoryMb",
                f"={common.memory_mb} with {cpus:g} CPU(s) does not fit the largest {cpu_kind} Fly preset "
                f"{largest.name} ({largest.cpus} CPUs, at most {largest.max_mb} MB); "
                f"pulumi config set memoryMb {largest.max_mb}",
            )
    if preset is None:
        return None
    memory_mb = vm_memory_mb(preset, common.memory_mb)
    if auto_stop == "suspend" and memory_mb > SUSPEND_MAX_MB:
        r.problem(
            "flyAutoStop",
            f"=suspend needs machines of at most {SUSPEND_MAX_MB} MB (this one has {memory_mb} MB); "
            "pulumi config set flyAutoStop stop",
        )
    if preset.cpu_kind == "shared":
        r.warnings.append(
            "reranker:flyCpuKind=shared: Fly throttles shared vCPUs to a small baseline under sustained "
            "load, and the model is compute-bound; use performance for steady traffic"
        )
    check_stop_grace(r, common, MAX_KILL_TIMEOUT_SECONDS, "Fly kills a machine (kill_timeout)")
    soft, hard = concurrency_limits(preset.cpus, scaling.concurrency)
    return Settings(
        service_name=app,
        app=app,
        region=region,
        preset=preset,
        memory_mb=memory_mb,
        auto_stop=auto_stop,
        min_machines=scaling.min_instances,
        max_machines=scaling.max_instances,
        soft_limit=soft,
        hard_limit=hard,
    )


def deploy(name: str, cfg: StackConfig, spec: DeploymentSpec) -> pulumi.ComponentResource:
    from infra.config_as_code import refuse_pulumi_up

    refuse_pulumi_up(
        cfg,
        CONFIG_FILE,
        "it is deployed with flyctl: no maintained Pulumi provider for Fly.io exists (the Python "
        "pulumi-flyio has had no release since 2025-03)",
        then="`fly deploy`",
        readme="Fly.io",
    )
