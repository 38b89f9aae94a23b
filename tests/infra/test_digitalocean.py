"""Target `digitalocean` against Pulumi's mocks, with infra/examples/Pulumi.digitalocean.yaml: the App
Platform app a `pulumi up` would create, its inputs, the secrets' secrecy, and what it refuses."""

from __future__ import annotations

import pulumi
import pytest

from infra.config import HEALTH_PATH
from infra.spec import STOP_MARGIN_SECONDS
from infra.targets import digitalocean as do_target
from tests.infra import harness
from tests.infra.harness import (
    BUILT_DIGEST,
    FAKE_SECRETS,
    plain,
    strings_inside_secrets,
    strings_outside_secrets,
)

APP = "digitalocean:index/app:App"
IMAGE = "docker:index/image:Image"
API_KEYS = FAKE_SECRETS["apiKeys"]
DEPLOYED = {
    "set": {"imageName": "registry.digitalocean.com/acme/reranker:2.0.0", "registryUsername": "acme"},
    "secrets": {"apiKeys": API_KEYS, "registryPassword": FAKE_SECRETS["registryPassword"]},
}


def deployed(**changes) -> dict:
    return harness.changed(DEPLOYED, **changes)


def service(run: harness.Run) -> dict:
    (only,) = plain(run.one(APP).inputs)["spec"]["services"]
    return only


@pulumi.runtime.test
def test_the_example_runs_the_pushed_digest_from_docr_with_cpu_autoscaling_on_dedicated_cpu():
    run = harness.run_example("digitalocean", **DEPLOYED)

    def check(outputs):
        image = run.one(IMAGE).inputs
        assert image["imageName"] == "registry.digitalocean.com/acme/reranker:2.0.0"
        assert image["skipPush"] is False and image["build"]["platform"] == "linux/amd64"
        spec = plain(run.one(APP).inputs)["spec"]
        assert (spec["name"], spec["region"]) == ("reranker-digitalocean", "nyc")
        assert spec["ingress"]["rules"] == [
            {"component": {"name": "reranker"}, "match": {"path": {"prefix": "/"}}}
        ]
        svc = service(run)
        assert svc["image"] == {
            "registryType": "DOCR",
            "repository": "reranker",
            "digest": BUILT_DIGEST,  # the build just pushed: every build is a new deployment
        }
        assert svc["httpPort"] == 8000
        # 1024 MB, autoscaling 1..3: the smallest dedicated-CPU size (shared sizes cannot autoscale).
        assert svc["instanceSizeSlug"] == "apps-d-1vcpu-1gb"
        assert "instanceCount" not in svc
        assert svc["autoscaling"] == {
            "minInstanceCount": 1,
            "maxInstanceCount": 3,
            "metrics": {"cpu": {"percent": 70}},
        }
        assert svc["healthCheck"] == {
            "httpPath": HEALTH_PATH,
            "port": 8000,
            "initialDelaySeconds": 120,
            "periodSeconds": 5,
            "timeoutSeconds": 4,
            "failureThreshold": 3,
            "successThreshold": 1,
        }
        assert svc["livenessHealthCheck"]["httpPath"] == HEALTH_PATH
        assert svc["livenessHealthCheck"]["initialDelaySeconds"] == 120
        assert svc["termination"] == {"drainSeconds": 15, "gracePeriodSeconds": 30 + STOP_MARGIN_SECONDS}

        assert outputs["url"] == "https://reranker-digitalocean-mock1.ondigitalocean.app"
        assert outputs["healthUrl"] == f"https://reranker-digitalocean-mock1.ondigitalocean.app{HEALTH_PATH}"
        assert outputs["doInstanceSize"] == "apps-d-1vcpu-1gb"
        assert outputs["doInstanceListPriceUsdPerMonth"] == 34

    return run.settled(check)


@pulumi.runtime.test
def test_every_variable_is_set_and_secrets_are_secret_typed_and_never_plain():
    run = harness.run_example("digitalocean", **DEPLOYED)

    def check(outputs):
        envs = {item["key"]: item for item in service(run)["envs"]}
        assert {k: v["value"] for k, v in envs.items() if v["type"] == "GENERAL"} == {
            "PORT": "8000",
            "WEB_CONCURRENCY": "1",
            "ENVIRONMENT": "production",
            "RERANK_DEVICE": "cpu",
            "RERANK_MAX_LENGTH": "512",
            "LOG_LEVEL": "info",
            "RERANK_SHUTDOWN_GRACE_S": "30",
        }
        assert {k for k, v in envs.items() if v["type"] == "SECRET"} == {"RERANK_API_KEYS"}
        assert all(item["scope"] == "RUN_TIME" for item in envs.values())
        assert set(envs) == set(outputs["envNames"])
        app = run.one(APP).inputs
        assert API_KEYS in strings_inside_secrets(app["spec"])
        for resource in run.mocks.created:
            clear = strings_outside_secrets(resource.inputs)
            for name, value in FAKE_SECRETS.items():
                assert not any(value in text for text in clear), f"{name} in clear in {resource.typ}"
        # DOCR is in the same account: no registry credentials in the app.
        assert "registryCredentials" not in service(run)["image"]

    return run.settled(check)


@pytest.mark.parametrize(
    ("instances", "size"),
    [("1", "apps-s-1vcpu-1gb-fixed"), ("2", "apps-s-1vcpu-1gb")],
)
@pulumi.runtime.test
def test_a_fixed_count_takes_the_cheapest_shared_size_that_can_run_it(instances, size):
    run = harness.run_example(
        "digitalocean", **deployed(minInstances=instances, maxInstances=instances, targetCpuPercent=None)
    )

    def check(outputs):
        svc = service(run)
        assert svc["instanceSizeSlug"] == size and outputs["doInstanceSize"] == size
        assert svc["instanceCount"] == int(instances) and "autoscaling" not in svc

    return run.settled(check)


@pulumi.runtime.test
def test_a_private_ghcr_image_gets_secret_registry_credentials_and_a_prebuilt_tag_is_deployed_as_is():
    run = harness.run_example(
        "digitalocean",
        set={"imageName": "ghcr.io/acme/reranker:1.2.0", "buildImage": "false", "registryUsername": "acme-bot",
             "memoryMb": "2048", "workers": "2", "doRegion": "fra"},
        secrets={"apiKeys": API_KEYS, "registryPassword": FAKE_SECRETS["registryPassword"]},
    )  # fmt: skip

    def check(outputs):
        assert run.of_type(IMAGE) == []
        image = service(run)["image"]
        assert {k: image[k] for k in ("registryType", "registry", "repository", "tag")} == {
            "registryType": "GHCR",
            "registry": "acme",
            "repository": "reranker",
            "tag": "1.2.0",
        }
        assert "digest" not in image
        secret = run.one(APP).inputs["spec"]
        assert f"acme-bot:{FAKE_SECRETS['registryPassword']}" in strings_inside_secrets(secret)
        assert service(run)["instanceSizeSlug"] == "apps-d-1vcpu-2gb"  # 2 GB, autoscaling
        assert plain(run.one(APP).inputs)["spec"]["region"] == "fra"
        assert outputs["imageName"] == "ghcr.io/acme/reranker:1.2.0"

    return run.settled(check)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("registry.digitalocean.com/acme/reranker:1", ("DOCR", None, "reranker", "1", None)),
        ("ghcr.io/acme/reranker", ("GHCR", "acme", "reranker", "latest", None)),
        ("acme/reranker:2", ("DOCKER_HUB", "acme", "reranker", "2", None)),
        (
            "docker.io/acme/reranker@sha256:" + "ab" * 32,
            ("DOCKER_HUB", "acme", "reranker", None, "sha256:" + "ab" * 32),
        ),
        ("quay.io/acme/reranker:1", None),
        ("reranker:dev", None),
    ],
)
def test_image_references_map_to_app_platform_registries(reference, expected):
    source = do_target.image_source(reference)
    got = (
        None
        if source is None
        else (source.registry_type, source.registry, source.repository, source.tag, source.digest)
    )
    assert got == expected


def test_the_size_table_is_ordered_and_names_its_prices():
    memory = [size.memory_mb for size in do_target.SIZES]
    assert memory == sorted(memory)
    assert all(size.usd_per_month > 0 for size in do_target.SIZES)
    assert not do_target.SIZES_BY_SLUG["apps-s-1vcpu-1gb"].dedicated
    assert do_target.PRICES_AS_OF


REFUSED = {
    "a size that does not exist": (
        {"doInstanceSize": "apps-s-1vcpu-3gb"},
        [
            "reranker:doInstanceSize='apps-s-1vcpu-3gb' is not an App Platform instance size",
            "pulumi config set doInstanceSize apps-d-1vcpu-1gb",
        ],
    ),
    "a size too small for one worker": (
        {"doInstanceSize": "apps-d-1vcpu-0.5gb", "memoryMb": None},
        [
            "reranker:doInstanceSize=apps-d-1vcpu-0.5gb (512 MB) cannot hold 1 worker(s)",
            "pulumi config set doInstanceSize apps-d-1vcpu-1gb",
        ],
    ),
    "a shared-CPU size with autoscaling": (
        {"doInstanceSize": "apps-s-1vcpu-2gb"},
        [
            "reranker:doInstanceSize=apps-s-1vcpu-2gb is a shared-CPU size",
            "autoscales only dedicated-CPU sizes",
            "pulumi config set doInstanceSize apps-d-1vcpu-1gb",
        ],
    ),
    "a one-instance size for several instances": (
        {
            "doInstanceSize": "apps-s-1vcpu-1gb-fixed",
            "minInstances": "2",
            "maxInstances": "2",
            "targetCpuPercent": None,
        },
        ["reranker:doInstanceSize=apps-s-1vcpu-1gb-fixed is a size that runs exactly one instance"],
    ),
    "more memory than the largest size": (
        {"memoryMb": "65536"},
        [
            "reranker:memoryMb=65536 does not fit the largest supported App Platform instance size apps-d-8vcpu-32gb"
        ],
    ),
    "too little memory for the workers": (
        {"memoryMb": "1024", "workers": "2"},
        ["reranker:memoryMb=1024 is too small for 2 workers"],
    ),
    "requests in flight are no App Platform scaling signal": (
        {"concurrency": "10"},
        ["reranker:concurrency cannot be honoured", "CPU only"],
    ),
    "no scale to zero": (
        {"minInstances": "0"},
        ["reranker:minInstances=0", "pulumi config set minInstances 1"],
    ),
    "a registry App Platform cannot pull from": (
        {"imageName": "quay.io/acme/reranker:1"},
        ["App Platform pulls only from DigitalOcean Container Registry"],
    ),
    "the placeholder image name": (
        {"imageName": "registry.digitalocean.com/OWNER/reranker:latest"},
        ["still has the OWNER placeholder"],
    ),
    "an app name App Platform rejects": (
        {"doAppName": "Reranker_Prod"},
        ["reranker:doAppName='Reranker_Prod'"],
    ),
    "a region App Platform does not have": ({"doRegion": "mars"}, ["reranker:doRegion='mars' is not one of"]),
    "a shutdown grace past App Platform's limit": (
        {"shutdownGraceSeconds": "900"},
        ["reranker:shutdownGraceSeconds=900", "pulumi config set shutdownGraceSeconds 595"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_a_setting_app_platform_cannot_honour_fails_preview_naming_the_key_and_the_fix(case):
    changes, expected = REFUSED[case]
    message = harness.refusal("digitalocean", **deployed(**changes))
    for text in expected:
        assert text in message, message


def test_the_readme_states_every_size_with_its_list_price_and_the_date():
    readme = (harness.ROOT / "README.md").read_text()
    for size in do_target.SIZES:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{size.name}` |")), None)
        assert row is not None, f"{size.name} is missing from the README's App Platform table"
        assert f"${size.usd_per_month:g} / month" in row
    assert f"as recorded on {do_target.PRICES_AS_OF}" in readme


def test_a_missing_required_secret_is_refused_with_the_command_that_sets_it():
    message = harness.refusal(
        "digitalocean", set=DEPLOYED["set"], secrets={"registryPassword": FAKE_SECRETS["registryPassword"]}
    )
    assert "reranker:apiKeys (RERANK_API_KEYS) is required by stack digitalocean but not set" in message
    assert "pulumi config set --secret apiKeys" in message
