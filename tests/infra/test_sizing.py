"""The memory rule and the Render plan table (infra/sizing.py)."""

from __future__ import annotations

import pytest

from infra import sizing
from infra.targets import render


def test_required_memory_is_workers_times_footprint_plus_headroom():
    assert sizing.required_memory_mb(1) == sizing.WORKER_FOOTPRINT_MB + sizing.HEADROOM_MB
    assert sizing.required_memory_mb(2) == 2 * sizing.WORKER_FOOTPRINT_MB + sizing.HEADROOM_MB


@pytest.mark.parametrize("workers", range(1, 9))
def test_max_workers_is_the_inverse_of_required_memory(workers):
    needed = sizing.required_memory_mb(workers)
    assert sizing.max_workers_for(needed) == workers
    assert sizing.max_workers_for(needed - 1) == workers - 1


@pytest.mark.parametrize(
    ("memory_mb", "cpus", "plan"),
    [
        (512, None, "starter"),
        (513, None, "standard"),
        (2048, None, "standard"),
        (2049, None, "pro"),
        (4096, None, "pro"),
        (8192, None, "pro_plus"),
        (8193, None, None),
        (1024, 2, "pro"),  # memory fits standard, CPUs do not
        (1024, 8, None),
    ],
)
def test_the_plan_is_the_smallest_that_holds_memory_and_cpus(memory_mb, cpus, plan):
    found = sizing.smallest_fitting(render.SIZES, memory_mb, cpus)
    assert (found.api_name if found else None) == plan


def test_render_plans_are_ordered_and_starter_cannot_hold_one_worker():
    sizes = [plan.memory_mb for plan in render.SIZES]
    assert sizes == sorted(sizes)
    assert render.PLANS_BY_NAME["starter"].memory_mb < sizing.required_memory_mb(1)
    assert [(p.api_name, p.memory_mb, p.usd_per_month) for p in render.SIZES] == [
        ("starter", 512, 7),
        ("standard", 2048, 25),
        ("pro", 4096, 85),
        ("pro_plus", 8192, 175),
    ]


def test_the_api_plan_names_are_pulumi_render_enum_values():
    from pulumi_render.services import WebServiceDetailsCreatePlan

    values = {member.value for member in WebServiceDetailsCreatePlan}
    assert {plan.api_name for plan in render.SIZES} <= values
