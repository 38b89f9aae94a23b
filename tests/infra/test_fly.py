"""fly.toml is what the generator makes of infra/examples/Pulumi.fly.yaml, parses as TOML (tomllib), says
what the spec says; the `fly` target sizes the VM from infra/sizing.py, refuses what Fly cannot do, and
`pulumi up` on a fly stack stops with the way forward."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pulumi
import pytest
import yaml

from infra import fly_config
from infra.config import HEALTH_PATH, ConfigError, load_stack_file
from infra.spec import STOP_MARGIN_SECONDS, build_spec
from infra.targets import fly
from tests.infra import harness
from tests.infra.harness import ROOT

SCRIPT = [sys.executable, str(ROOT / "scripts" / "fly_config.py")]


def example(**changes) -> dict:
    document = yaml.safe_load(harness.example_file("fly").read_text())
    for key, value in changes.items():
        if value is None:
            document["config"].pop(f"reranker:{key}", None)
        else:
            document["config"][f"reranker:{key}"] = value
    return document


def rendered(tmp_path, **changes) -> dict:
    stack = tmp_path / "Pulumi.fl.yaml"
    stack.write_text(yaml.safe_dump(example(**changes)))
    return tomllib.loads(fly_config.generate(stack))


def test_fly_toml_is_up_to_date_with_the_example_stack():
    assert (ROOT / "fly.toml").read_text() == fly_config.generate(), (
        "fly.toml is stale: run python scripts/fly_config.py"
    )


def test_fly_toml_parses_and_says_what_the_spec_says():
    document = tomllib.loads((ROOT / "fly.toml").read_text())
    cfg = load_stack_file("fly", harness.example_file("fly"), deploy=False)
    spec = build_spec(cfg)
    assert document["app"] == "my-reranker" and document["primary_region"] == "iad"
    assert document["kill_signal"] == "SIGTERM"
    assert document["kill_timeout"] == spec.shutdown_grace_seconds + STOP_MARGIN_SECONDS
    assert (ROOT / document["build"]["dockerfile"]).resolve() == spec.image.dockerfile
    assert document["build"]["build-target"] == "runtime"
    assert document["env"] == dict(spec.env)  # every plain variable, and no secret
    assert not set(document["env"]) & set(spec.secret_env)
    http = document["http_service"]
    assert http["internal_port"] == spec.port == 8000 and http["force_https"] is True
    assert (http["min_machines_running"], http["auto_stop_machines"], http["auto_start_machines"]) == (
        1,
        "stop",
        True,
    )
    assert http["concurrency"] == {"type": "requests", "soft_limit": 3, "hard_limit": 12}
    (check,) = http["checks"]
    assert check["path"] == HEALTH_PATH and check["method"] == "GET"
    assert check["grace_period"] == f"{spec.health.start_period_seconds}s" and check["timeout"] == "4s"
    assert document["vm"] == [{"cpu_kind": "performance", "cpus": 1, "memory_mb": 2048}]
    assert document["deploy"]["strategy"] == "rolling"


def test_concurrency_limits_come_from_the_benchmark_throughput():
    # 1.18 requests/s per CPU (benchmarks/RESULTS.md): 2 s of work = 3 requests, 10 s = 12.
    assert fly.concurrency_limits(1, None) == (3, 12)
    assert fly.concurrency_limits(2, None) == (5, 24)
    assert fly.concurrency_limits(2, 8) == (5, 8)  # `concurrency` is the hard limit
    assert fly.concurrency_limits(1, 2) == (2, 2)


@pytest.mark.parametrize(
    ("changes", "vm", "auto_stop"),
    [
        ({}, {"cpu_kind": "performance", "cpus": 1, "memory_mb": 2048}, "stop"),
        (
            {"flyCpuKind": "shared", "memoryMb": 1000},
            {"cpu_kind": "shared", "cpus": 1, "memory_mb": 1024},
            "stop",
        ),
        (
            {"workers": 2, "cpus": 2, "memoryMb": 1750},
            {"cpu_kind": "performance", "cpus": 2, "memory_mb": 4096},
            "stop",
        ),
        (
            {"memoryMb": 3000, "minInstances": 2, "maxInstances": 2},
            {"cpu_kind": "performance", "cpus": 1, "memory_mb": 3072},
            "off",
        ),
        ({"flyVmSize": "performance-2x"}, {"cpu_kind": "performance", "cpus": 2, "memory_mb": 4096}, "stop"),
    ],
)
def test_the_vm_is_the_smallest_preset_that_holds_memory_and_cpus(tmp_path, changes, vm, auto_stop):
    document = rendered(tmp_path, **changes)
    assert document["vm"] == [vm]
    assert document["http_service"]["auto_stop_machines"] == auto_stop


def test_scale_to_zero_and_a_prebuilt_image(tmp_path):
    document = rendered(tmp_path, minInstances=0, maxInstances=2, buildImage=False,
                        imageName="registry.fly.io/my-reranker:2.0.0", concurrency=6)  # fmt: skip
    assert document["http_service"]["min_machines_running"] == 0
    assert document["http_service"]["auto_stop_machines"] == "stop"
    assert document["http_service"]["concurrency"]["hard_limit"] == 6
    assert document["build"] == {"image": "registry.fly.io/my-reranker:2.0.0"}


def test_prices_grow_with_memory_from_the_preset_base():
    preset = fly.PRESETS_BY_NAME["shared-cpu-1x"]
    assert preset.price(256) == 1.94 and preset.price(1024) == pytest.approx(5.69)
    assert fly.PRESETS_BY_NAME["performance-1x"].price(4096) == pytest.approx(42.19)


def test_the_script_rewrites_checks_and_prints_the_commands(tmp_path):
    harness.check_generator_script(
        ROOT / "scripts" / "fly_config.py", fly_config.generate, tmp_path, "fly.toml"
    )
    commands = subprocess.run([*SCRIPT, "--variables"], capture_output=True, text=True, check=True).stdout
    assert "fly secrets set --app my-reranker --stage 'RERANK_API_KEYS=<value>'" in commands
    assert "fly scale count 3 --app my-reranker" in commands


def test_the_toml_writer_escapes_strings():
    text = fly_config.to_toml({"env": {"A": 'quote " and \\ and \n'}, "t": [{"x": 1}]})
    assert tomllib.loads(text) == {"env": {"A": 'quote " and \\ and \n'}, "t": [{"x": 1}]}


REFUSED = {
    "a CPU target": (
        {"targetCpuPercent": 70},
        ["reranker:targetCpuPercent cannot be honoured", "not by CPU"],
    ),
    "a preset that does not exist": (
        {"flyVmSize": "performance-3x"},
        ["reranker:flyVmSize='performance-3x'", "pulumi config set flyVmSize performance-1x"],
    ),
    "a preset too small for the workers": (
        {"flyVmSize": "shared-cpu-1x", "workers": 4, "memoryMb": None, "cpus": None},
        ["reranker:flyVmSize=shared-cpu-1x (at most 2048 MB) cannot hold 4 worker(s)"],
    ),
    "more memory than any preset": ({"memoryMb": 70000}, ["reranker:memoryMb=70000", "performance-8x"]),
    "no auto stop with a scaling range": (
        {"flyAutoStop": "off"},
        ["reranker:flyAutoStop=off", "pulumi config set flyAutoStop stop"],
    ),
    "suspend above 2 GB": (
        {"flyAutoStop": "suspend", "memoryMb": 4096},
        ["reranker:flyAutoStop=suspend needs machines of at most 2048 MB"],
    ),
    "an app name Fly rejects": ({"flyApp": "My_Reranker"}, ["reranker:flyApp='My_Reranker'"]),
    "a region Fly does not have": ({"flyRegion": "xyz"}, ["reranker:flyRegion='xyz' is not one of"]),
    "a shutdown grace past Fly's kill_timeout": (
        {"shutdownGraceSeconds": 400},
        ["pulumi config set shutdownGraceSeconds 295"],
    ),
    "too little memory for the workers": (
        {"memoryMb": 1024, "workers": 2},
        ["reranker:memoryMb=1024 is too small for 2 workers"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_what_fly_cannot_do_is_refused_naming_the_key_and_the_fix(case, tmp_path):
    changes, expected = REFUSED[case]
    with pytest.raises(ConfigError) as caught:
        rendered(tmp_path, **changes)
    for text in expected:
        assert text in str(caught.value), str(caught.value)


def test_pulumi_up_on_a_fly_stack_stops_and_says_why_there_is_no_provider():
    from infra import program

    harness.configure_example("fly", secrets={"apiKeys": harness.FAKE_SECRETS["apiKeys"]})
    with pytest.raises(pulumi.RunError) as caught:
        program.run()
    message = str(caught.value)
    assert "pulumi-flyio" in message and "2025-03" in message and "fly deploy" in message


def test_the_readme_states_every_preset_with_its_list_price_and_the_date():
    readme = (ROOT / "README.md").read_text()
    for preset in fly.VM_PRESETS:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{preset.name}` |")), None)
        assert row is not None, f"{preset.name} is missing from the README's Fly table"
        assert f"${preset.usd_per_month_at_min:.2f} / month" in row
    assert (
        f"as recorded on {fly.PRICES_AS_OF}" in readme
        and f"${fly.EXTRA_USD_PER_GB_MONTH:g} / month" in readme
    )
