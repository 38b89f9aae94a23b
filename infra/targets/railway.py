"""Target `railway`: Railway, deployed from the generated railway.json (infra/railway_config.py).

Railway has no Pulumi provider (neither official nor a maintained community one), and its own
config-as-code, `railway.json`, is what Railway reads on every deploy. This module validates a
`railway` stack's settings (plan memory, replicas, what Railway cannot do), railway_config.py renders
them, and `pulumi up` on a `railway` stack stops with a message pointing at railway.json: failing at
preview with the way forward serves better than an unknown-target error or a silent no-op.

What Railway cannot do, and this module therefore refuses: horizontal autoscaling (replicas are a
fixed `numReplicas`), scaling on CPU or on requests in flight. Its health check runs at deploy time
only (a new deployment goes live once the path answers 200); nothing checks it afterwards, the restart
policy only reacts to the process exiting.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra import sizing
from infra.config import Key, StackConfig, _Reader, check_size, refuse_scaling
from infra.spec import DeploymentSpec
from infra.targets._base import check_stop_grace, dns_label

NAME = "railway"
CONFIG_FILE = "railway.json"  # what deploys this target (infra/railway_config.py renders it): not `pulumi up`

RESTART_POLICIES = ("ON_FAILURE", "ALWAYS", "NEVER")
OVERLAP_SECONDS = 10  # the old deployment keeps serving while traffic moves to the new one
MAX_DRAINING_SECONDS = 3600
DOCKERFILE_DEFAULT_STAGE = "runtime"  # the Dockerfile's last stage, what a plain `docker build` builds


@dataclass(frozen=True)
class RailwayPlan(sizing.Size):
    """Per-replica limits of a Railway plan (railway.com/pricing). `usd_per_month` is the subscription,
    which includes that much usage; memory and CPU actually used are billed on top of it."""


PRICES_AS_OF = "2026-12-01"
USD_PER_GB_MEMORY_MONTH = 10  # usage price of memory actually used
USD_PER_VCPU_MONTH = 20  # usage price of CPU actually used
SIZES: tuple[RailwayPlan, ...] = (
    RailwayPlan("free", 512, 1, 0),
    RailwayPlan("hobby", 8192, 8, 5),
    RailwayPlan("pro", 32768, 32, 20),
)
PLANS_BY_NAME = {plan.name: plan for plan in SIZES}

KEYS: tuple[Key, ...] = (
    Key("railwayPlan", "railway: your plan (" + ", ".join(PLANS_BY_NAME) + "), for its per-replica memory"),
    Key("railwayRegion", "railway: deploy region, e.g. us-west2 (default: the project's)"),
    Key("railwayRestartPolicy", "railway: " + ", ".join(RESTART_POLICIES)),
    Key("railwayRestartMaxRetries", "railway: restarts after failures before giving up (ON_FAILURE)"),
)


@dataclass(frozen=True)
class Settings:
    service_name: str
    plan: RailwayPlan
    replicas: int
    sleep: bool  # minInstances=0: Railway's app sleeping (asleep when idle, woken by a request)
    region: str | None
    restart_policy: str
    restart_max_retries: int
    pulls_from_registry: bool = False  # Railway builds the Dockerfile itself

    def usd_per_month_estimate(self, memory_mb: int) -> float:
        """Memory held all month by every replica at `memoryMb`, before CPU usage (usage is billed)."""
        return round(self.replicas * memory_mb / 1024 * USD_PER_GB_MEMORY_MONTH, 2)


def parse(r: _Reader, common: StackConfig) -> Settings | None:
    plan_name = r.string("railwayPlan", "hobby", PLANS_BY_NAME) or "hobby"
    scaling = common.scaling
    if scaling.min_instances == 0 and scaling.max_instances > 1:
        r.problem(
            "maxInstances",
            f"={scaling.max_instances} with minInstances=0: Railway can put a service to sleep when idle "
            "(minInstances 0, maxInstances 1) but not scale it between counts; pulumi config set maxInstances 1",
        )
    elif scaling.min_instances > 0 and scaling.autoscaling:
        r.problem(
            "maxInstances",
            f"={scaling.max_instances} above minInstances={scaling.min_instances} asks for autoscaling, "
            "which Railway does not have (replicas are a fixed count); "
            f"pulumi config set maxInstances {scaling.min_instances}",
        )
    refuse_scaling(r, scaling, ("targetCpuPercent",), "Railway does not scale on CPU")
    refuse_scaling(r, scaling, ("concurrency",), "Railway does not route by requests in flight")
    # The plan is a fact about your account, not a choice: check that it holds one replica.
    plan = check_size(
        r, "railwayPlan", common, SIZES, platform="Railway plan", forced=PLANS_BY_NAME[plan_name]
    )
    cpus = common.cpus if common.cpus is not None else float(common.workers)
    if plan is not None and cpus > plan.cpus:
        r.problem(
            "cpus", f"={cpus:g} is more than railwayPlan={plan.name} gives a replica ({plan.cpus:g} vCPU)"
        )
    policy = r.string("railwayRestartPolicy", "ON_FAILURE", RESTART_POLICIES) or "ON_FAILURE"
    retries = r.integer("railwayRestartMaxRetries", 10, 0, 100)
    if r.has("railwayRestartMaxRetries") and policy != "ON_FAILURE":
        r.problem(
            "railwayRestartMaxRetries",
            f"applies to railwayRestartPolicy=ON_FAILURE only (it is {policy}); "
            "pulumi config rm railwayRestartMaxRetries",
        )
    check_stop_grace(r, common, MAX_DRAINING_SECONDS, "Railway drains a deployment (drainingSeconds)")
    if common.build_target != DOCKERFILE_DEFAULT_STAGE:
        r.problem(
            "imageFlavour",
            f"={common.image_flavour} is the Dockerfile stage {common.build_target}, but railway.json cannot "
            f"choose a stage: Railway builds the last one ({DOCKERFILE_DEFAULT_STAGE}); "
            "pulumi config rm imageFlavour",
        )
    if plan is None:
        return None
    return Settings(
        service_name=dns_label(f"reranker-{common.stack}"),
        plan=plan,
        replicas=max(1, scaling.min_instances),
        sleep=scaling.min_instances == 0,
        region=r.string("railwayRegion"),
        restart_policy=policy,
        restart_max_retries=retries,
    )


def deploy(name: str, cfg: StackConfig, spec: DeploymentSpec) -> pulumi.ComponentResource:
    from infra.config_as_code import refuse_pulumi_up

    refuse_pulumi_up(
        cfg,
        CONFIG_FILE,
        "Railway deploys it from railway.json: Railway has no Pulumi provider",
        then="set the variables it prints (`--variables`), then `railway up` or push to the connected repository",
        readme="Railway",
    )
