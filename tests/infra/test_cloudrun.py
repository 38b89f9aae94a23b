"""Target `cloudrun` against Pulumi's mocks, from infra/examples/Pulumi.cloudrun.yaml: the Cloud Run service,
its image in Artifact Registry, its secrets in Secret Manager, probes, size, scaling, public access, and
every setting Cloud Run cannot honour refused before anything is declared."""

from __future__ import annotations

import pulumi
import pytest

from infra.targets import cloudrun
from tests.infra import harness
from tests.infra.harness import BUILT_DIGEST, FAKE_SECRETS, FAKE_TOKENS, plain, strings_inside_secrets
from tests.infra.test_program import assert_no_secret_in_clear
from tests.infra.test_validation import refused

SERVICE = "gcp:cloudrunv2/service:Service"
IMAGE = "docker:index/image:Image"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
SECRET = "gcp:secretmanager/secret:Secret"
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
SECRET_READER = "gcp:secretmanager/secretIamMember:SecretIamMember"
INVOKER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
ACCOUNT = "gcp:serviceaccount/account:Account"
API = "gcp:projects/service:Service"
PROJECT = "acme-rerank"


def cloudrun_stack(set_: dict | None = None, secrets: dict | None = None, **kwargs):
    return {
        "set": {"gcpProject": PROJECT, **(set_ or {})},
        "secrets": {"apiKeys": FAKE_SECRETS["apiKeys"], **(secrets or {})},
        **kwargs,
    }


def run(set_=None, secrets=None):
    return harness.run_stack("cloudrun", **cloudrun_stack(set_, secrets))


def container(r) -> dict:
    (only,) = r.one(SERVICE).inputs["template"]["containers"]
    return only


@pulumi.runtime.test
def test_the_example_deploys_a_cloud_run_service_from_artifact_registry():
    r = run(secrets={"supabaseJwtSecret": FAKE_SECRETS["supabaseJwtSecret"]})

    def check(outputs):
        assert {x.inputs["service"] for x in r.of_type(API)} == {
            "run.googleapis.com",
            "artifactregistry.googleapis.com",
            "secretmanager.googleapis.com",
            "iam.googleapis.com",
        }
        repository = r.one(REPOSITORY).inputs
        assert (repository["format"], repository["location"], repository["repositoryId"]) == (
            "DOCKER",
            "europe-west1",
            "reranker",
        )
        image = r.one(IMAGE).inputs
        assert image["imageName"] == f"europe-west1-docker.pkg.dev/{PROJECT}/reranker/reranker:cloudrun"
        assert image["build"]["target"] == "runtime" and image["build"]["platform"] == "linux/amd64"
        assert image["skipPush"] is False
        registry = image["registry"]
        assert plain(registry)["server"] == "europe-west1-docker.pkg.dev"
        assert plain(registry)["username"] == "oauth2accesstoken"
        assert FAKE_TOKENS["gcp access token"] in strings_inside_secrets(registry)

        service = r.one(SERVICE).inputs
        assert (service["name"], service["project"], service["location"]) == (
            "reranker-cloudrun",
            PROJECT,
            "europe-west1",
        )
        assert service["deletionProtection"] is True
        template = service["template"]
        assert template["serviceAccount"] == f"reranker-cloudrun-run@{PROJECT}.iam.gserviceaccount.com"
        assert template["maxInstanceRequestConcurrency"] == 4
        assert template["scaling"] == {"minInstanceCount": 1, "maxInstanceCount": 4, "cpuUtilization": 0.7}
        assert template["executionEnvironment"] == "EXECUTION_ENVIRONMENT_GEN2"

        c = container(r)
        assert c["image"] == f"europe-west1-docker.pkg.dev/{PROJECT}/reranker/reranker@{BUILT_DIGEST}"
        assert c["ports"] == {"containerPort": 8000}
        plain_env = {e["name"]: e["value"] for e in c["envs"] if "value" in e}
        assert plain_env == {
            "ENVIRONMENT": "production",
            "WEB_CONCURRENCY": "1",
            "RERANK_DEVICE": "cpu",
            "RERANK_MAX_LENGTH": "512",
            "LOG_LEVEL": "info",
            "RERANK_SHUTDOWN_GRACE_S": "5",
        }  # no PORT: Cloud Run sets it from the container port (and rejects it as a variable)
        refs = {e["name"]: e["valueSource"]["secretKeyRef"] for e in c["envs"] if "valueSource" in e}
        assert refs == {
            "RERANK_API_KEYS": {"secret": "reranker-cloudrun-rerank-api-keys", "version": "1"},
            "SUPABASE_JWT_SECRET": {"secret": "reranker-cloudrun-supabase-jwt-secret", "version": "1"},
        }
        assert c["resources"]["limits"] == {"cpu": "1", "memory": "2048Mi"}
        assert c["resources"]["cpuIdle"] is False and c["resources"]["startupCpuBoost"] is True
        startup, liveness = c["startupProbe"], c["livenessProbe"]
        assert startup["httpGet"] == {"path": "/api/health/", "port": 8000}
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120  # the start period
        assert liveness["httpGet"] == {"path": "/api/health/", "port": 8000}

        versions = {x.name: x.inputs for x in r.of_type(SECRET_VERSION)}
        assert sorted(strings_inside_secrets(v["secretData"])[0] for v in versions.values()) == sorted(
            [FAKE_SECRETS["apiKeys"], FAKE_SECRETS["supabaseJwtSecret"]]
        )
        assert {x.inputs["secretId"] for x in r.of_type(SECRET)} == {
            "reranker-cloudrun-rerank-api-keys",
            "reranker-cloudrun-supabase-jwt-secret",
        }
        readers = r.of_type(SECRET_READER)
        assert {x.inputs["role"] for x in readers} == {"roles/secretmanager.secretAccessor"}
        assert {x.inputs["member"] for x in readers} == {
            f"serviceAccount:reranker-cloudrun-run@{PROJECT}.iam.gserviceaccount.com"
        }
        invoker = r.one(INVOKER).inputs
        assert (invoker["role"], invoker["member"]) == ("roles/run.invoker", "allUsers")
        assert_no_secret_in_clear(r)
        for token in FAKE_TOKENS.values():
            assert not any(
                token in x for res in r.mocks.created for x in harness.strings_outside_secrets(res.inputs)
            )

        assert outputs["url"] == "https://reranker-cloudrun-x7k2q9-uc.a.run.app"
        assert outputs["healthUrl"] == "https://reranker-cloudrun-x7k2q9-uc.a.run.app/api/health/"
        assert outputs["imageDigest"].endswith(BUILT_DIGEST)
        assert outputs["cloudrunMemoryMb"] == 2048 and outputs["cloudrunCpu"] == 1
        assert outputs["listPriceUsdPerMonthPerInstance"] == cloudrun.usd_per_month(1, 2048)

    return r.settled(check)


@pulumi.runtime.test
def test_private_by_default_and_scale_to_zero_bills_per_request():
    r = run({"public": "false", "minInstances": "0", "maxInstances": "3", "deletionProtection": "false"}, {})

    def check(outputs):
        assert r.of_type(INVOKER) == []
        assert r.one(SERVICE).inputs["deletionProtection"] is False
        assert r.one(SERVICE).inputs["template"]["scaling"]["minInstanceCount"] == 0
        assert container(r)["resources"]["cpuIdle"] is True
        assert outputs["public"] is False

    return r.settled(check)


@pulumi.runtime.test
def test_the_onnx_flavour_from_a_pushed_image_gets_the_smallest_memory():
    pushed = f"europe-west1-docker.pkg.dev/{PROJECT}/reranker/reranker-onnx@sha256:" + "12" * 32
    r = run(
        {
            "imageFlavour": "onnx",
            "buildImage": "false",
            "imageName": pushed,
            "cpus": "0.5",
            "concurrency": "1",
            "maxInstances": "2",
            "targetCpuPercent": "",
            "memoryMb": "",
        }
    )

    def check(outputs):
        assert r.of_type(IMAGE) == [] and r.of_type(REPOSITORY) == []
        c = container(r)
        assert c["image"] == pushed
        # 1 worker x 300 MB + 150 MB (the onnx footprint) -> Cloud Run's 512 MiB at 0.5 CPU.
        assert c["resources"]["limits"] == {"cpu": "0.5", "memory": "512Mi"}
        template = r.one(SERVICE).inputs["template"]
        assert template["executionEnvironment"] == "EXECUTION_ENVIRONMENT_GEN1"  # below 1 CPU
        assert template["maxInstanceRequestConcurrency"] == 1
        assert outputs["imageName"] == pushed

    return r.settled(check)


@pulumi.runtime.test
def test_more_memory_than_one_cpu_holds_takes_the_next_cpu_size():
    r = run({"cpus": "", "memoryMb": "6144", "workers": "1"})

    def check(_):
        assert container(r)["resources"]["limits"] == {"cpu": "2", "memory": "6144Mi"}

    return r.settled(check)


CASES = {
    "no project": (
        {"gcpProject": ""},
        ["reranker:gcpProject is required for target=cloudrun (pulumi config set gcpProject"],
    ),
    "too little memory": (
        {"memoryMb": "600"},
        ["reranker:memoryMb=600 is too small for 1 worker x 650 MB + 150 MB headroom; set memoryMb >= 800"],
    ),
    "a CPU count Cloud Run does not offer": (
        {"cpus": "3"},
        ["reranker:cpus=3: Cloud Run takes 0.08-1 or 1, 2, 4, 6, 8 CPUs (pulumi config set cpus 4)"],
    ),
    "more memory than the CPU gets": (
        {"cpus": "1", "memoryMb": "6144"},
        ["reranker:memoryMb=6144: Cloud Run gives 1 CPU at most 4096 MB; pulumi config set cpus 2"],
    ),
    "concurrency below one CPU": (
        {
            "cpus": "0.5",
            "memoryMb": "1024",
            "imageFlavour": "onnx",
            "buildImage": "false",
            "imageName": "europe-west1-docker.pkg.dev/p/r/i:1",
            "targetCpuPercent": "",
        },
        ["reranker:concurrency=4: below 1 CPU Cloud Run serves one request at a time per instance"],
    ),
    "a CPU target Cloud Run does not take": (
        {"targetCpuPercent": "99"},
        ["reranker:targetCpuPercent=99: Cloud Run takes 10-95"],
    ),
    "a shutdown grace past Cloud Run's SIGKILL": (
        {"shutdownGraceSeconds": "30"},
        [
            "reranker:shutdownGraceSeconds=30: Cloud Run kills the container 10 s after SIGTERM",
            "pulumi config set shutdownGraceSeconds 5",
        ],
    ),
    "a start period longer than a startup probe can wait": (
        {"startPeriodSeconds": "300"},
        ["reranker:startPeriodSeconds=300: a Cloud Run startup probe can wait at most 240 s"],
    ),
    "an image from a registry Cloud Run cannot pull": (
        {"buildImage": "false", "imageName": "ghcr.io/acme/reranker:1"},
        ["reranker:imageName='ghcr.io/acme/reranker:1': Cloud Run pulls from Artifact Registry"],
    ),
    "a key of another target": (
        {"renderRegion": "ohio"},
        [
            "reranker:renderRegion is a setting of target render, but this stack's target is cloudrun; "
            "remove it: pulumi config rm renderRegion"
        ],
    ),
    "production without authentication": (
        {"requiredSecrets": "[]"},
        [
            "reranker:apiKeys is not set, nor supabaseJwtSecret or supabaseJwtPublicKey: environment=production"
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pulumi.runtime.test
def test_settings_cloud_run_cannot_honour_are_refused(case):
    set_, expected = CASES[case]
    secrets = {} if case == "production without authentication" else {"apiKeys": FAKE_SECRETS["apiKeys"]}
    overrides = {"set": {"gcpProject": PROJECT, **set_}, "secrets": secrets}
    if case == "production without authentication":
        overrides["remove"] = ("apiKeys",)
    message = refused("cloudrun", **overrides)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_the_size_table_follows_cloud_runs_cpu_memory_rules():
    assert [(s.cpus, s.memory_mb) for s in cloudrun.SIZES] == [
        (1, 4096),
        (2, 8192),
        (4, 16384),
        (6, 24576),
        (8, 32768),
    ]
    assert cloudrun.max_memory_mb(0.4) == 512 and cloudrun.max_memory_mb(0.5) == 1024
    assert cloudrun.min_memory_mb(4) == 2048 and cloudrun.min_memory_mb(8) == 4096
