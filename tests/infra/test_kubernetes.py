"""Target `kubernetes` against Pulumi's mocks, with infra/examples/Pulumi.kubernetes.yaml: the objects a
`pulumi up` would apply, dumped to YAML and validated offline against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: unknown fields fail too), and their contract with the service."""

from __future__ import annotations

import math

import kubernetes_validate
import pulumi
import pytest
import yaml
from packaging.version import Version

from infra import sizing
from infra.config import HEALTH_PATH
from infra.spec import STOP_MARGIN_SECONDS
from infra.targets import kubernetes as k8s_target
from tests.infra import harness
from tests.infra.harness import BUILT_DIGEST, FAKE_SECRETS, MOCK_SUFFIX, plain, strings_inside_secrets

# The newest Kubernetes version whose schemas kubernetes-validate ships (requirements/dev.txt pins it).
K8S_VERSION = kubernetes_validate.latest_version()
# The oldest the README promises (the preStop `sleep` action is on by default from 1.30).
K8S_MINIMUM = "1.30"

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SECRET = "kubernetes:core/v1:Secret"
SERVICE = "kubernetes:core/v1:Service"
NAMESPACE = "kubernetes:core/v1:Namespace"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
PROVIDER = "pulumi:providers:kubernetes"
IMAGE = "docker:index/image:Image"

API_KEYS = FAKE_SECRETS["apiKeys"]
# The example as a user deploys it: a real registry path, push credentials, the required API keys.
DEPLOYED = {
    "set": {"imageName": "ghcr.io/acme/reranker:2.0.0", "registryUsername": "acme-bot"},
    "secrets": {"apiKeys": API_KEYS, "registryPassword": FAKE_SECRETS["registryPassword"]},
}


def deployed(**changes) -> dict:
    return harness.changed(DEPLOYED, **changes)


def integral(value):
    """Numbers as the Kubernetes API has them: the mocks hand back integers as floats."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


def manifests(run: harness.Run) -> list[dict]:
    """Every Kubernetes object the program declares, as the YAML documents `kubectl apply` would take."""
    objects = [integral(plain(r.inputs)) for r in run.mocks.created if r.typ.startswith("kubernetes:")]
    for obj, resource in zip(
        objects, [r for r in run.mocks.created if r.typ.startswith("kubernetes:")], strict=True
    ):
        obj.setdefault("metadata", {}).setdefault("name", f"{resource.name}-{MOCK_SUFFIX}")  # auto-naming
    text = yaml.safe_dump_all(objects, sort_keys=False)
    return list(yaml.safe_load_all(text))


def validate_all(objects: list[dict], version: str = K8S_VERSION) -> list[str]:
    kinds = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.absolute_path)
            raise AssertionError(
                f"{obj['kind']} {obj['metadata'].get('name')}: {path}: {error.message}"
            ) from None
        kinds.append(obj["kind"])
    return kinds


def inputs(run: harness.Run, typ: str) -> dict:
    return integral(plain(run.one(typ).inputs))


def test_the_schemas_are_a_current_kubernetes():
    assert Version(K8S_VERSION) >= Version("1.33"), K8S_VERSION


# ---- the example stack -------------------------------------------------------------------------------


@pulumi.runtime.test
def test_the_example_declares_every_object_and_each_is_valid_for_kubernetes():
    run = harness.run_example("kubernetes", **DEPLOYED)

    def check(outputs):
        objects = manifests(run)
        kinds = validate_all(objects)
        assert sorted(kinds) == sorted(
            ["Namespace", "Secret", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler",
             "PodDisruptionBudget", "Ingress"]
        )  # fmt: skip
        assert run.of_type(PROVIDER) == []  # no kubeconfig/context set: the ambient kubeconfig
        assert outputs["url"] == "https://rerank.example.com"
        assert outputs["healthUrl"] == "https://rerank.example.com/api/health/"
        assert outputs["kubeNamespace"] == "reranker" and outputs["kubeAutoscaler"] == "hpa"
        assert sorted(outputs["kubeObjects"]) == sorted(
            f"{o['kind']}/{o['metadata']['name']}" for o in objects
        )
        assert outputs["imageName"] == "ghcr.io/acme/reranker:2.0.0"

    return run.settled(check)


@pulumi.runtime.test
def test_the_pod_runs_the_pushed_digest_as_non_root_read_only_with_no_capabilities():
    run = harness.run_example("kubernetes", **DEPLOYED)

    def check(_):
        image = inputs(run, IMAGE)
        assert image["imageName"] == "ghcr.io/acme/reranker:2.0.0" and image["skipPush"] is False
        assert image["build"]["platform"] == "linux/amd64" and image["build"]["target"] == "runtime"
        pod = inputs(run, DEPLOYMENT)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == f"ghcr.io/acme/reranker@{BUILT_DIGEST}"
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False and context["privileged"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        # /tmp: memory-backed, like the Docker target's tmpfs, and counted in the sizing headroom.
        assert container["volumeMounts"] == [{"name": "scratch-tmp", "mountPath": "/tmp"}]
        assert pod["volumes"] == [
            {"name": "scratch-tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}
        ]
        pull = run.of_type(SECRET)[1]
        assert pull.name.endswith("-pull")
        assert pod["imagePullSecrets"] == [{"name": f"{pull.name}-{MOCK_SUFFIX}"}]
        assert (
            inputs(run, NAMESPACE)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        )

    return run.settled(check)


@pulumi.runtime.test
def test_every_variable_reaches_the_container_and_secrets_only_through_the_secret():
    run = harness.run_example("kubernetes", **DEPLOYED)

    def check(outputs):
        (container,) = inputs(run, DEPLOYMENT)["spec"]["template"]["spec"]["containers"]
        env = {item["name"]: item for item in container["env"]}
        plain_env = {name: item["value"] for name, item in env.items() if "value" in item}
        assert plain_env == {
            "PORT": "8000",
            "WEB_CONCURRENCY": "1",
            "ENVIRONMENT": "production",
            "RERANK_DEVICE": "cpu",
            "RERANK_MAX_LENGTH": "512",
            "LOG_LEVEL": "info",
            "RERANK_SHUTDOWN_GRACE_S": "30",
        }
        env_secret = next(r for r in run.of_type(SECRET) if r.name.endswith("-env"))
        assert env["RERANK_API_KEYS"] == {
            "name": "RERANK_API_KEYS",
            "valueFrom": {
                "secretKeyRef": {"name": f"{env_secret.name}-{MOCK_SUFFIX}", "key": "RERANK_API_KEYS"}
            },
        }
        assert set(env) == set(outputs["envNames"])
        # The Secret holds the value, as a Pulumi secret; nothing else holds it in clear.
        assert strings_inside_secrets(env_secret.inputs["stringData"]) == [API_KEYS]
        assert (
            plain(env_secret.inputs)["immutable"] is True
            and "name" not in plain(env_secret.inputs)["metadata"]
        )
        for resource in run.mocks.created:
            clear = harness.strings_outside_secrets(resource.inputs)
            for name, value in FAKE_SECRETS.items():
                assert not any(value in text for text in clear), f"{name} in clear in {resource.typ}"
        for part in API_KEYS.split(","):
            assert part not in repr(outputs)

    return run.settled(check)


@pulumi.runtime.test
def test_resources_are_guaranteed_and_probes_cover_the_start_period_on_the_health_route():
    run = harness.run_example("kubernetes", **DEPLOYED)

    def check(_):
        pod = inputs(run, DEPLOYMENT)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["resources"] == {
            "requests": {"cpu": "1000m", "memory": "1024Mi"},
            "limits": {"cpu": "1000m", "memory": "1024Mi"},
        }
        assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
        probes = {kind: container[f"{kind}Probe"] for kind in ("startup", "readiness", "liveness")}
        for probe in probes.values():
            assert probe["httpGet"] == {"path": HEALTH_PATH, "port": "http"}
            assert probe["timeoutSeconds"] == 4
        startup = probes["startup"]
        # Model load and warm-up may take the whole start period (120 s) before liveness takes over.
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120 + 3 * 5
        assert probes["readiness"]["periodSeconds"] == 5 and probes["readiness"]["failureThreshold"] == 3
        assert probes["liveness"]["periodSeconds"] * probes["liveness"]["failureThreshold"] == 60
        assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": k8s_target.PRESTOP_PAUSE_SECONDS}}}
        assert (
            pod["terminationGracePeriodSeconds"]
            == k8s_target.PRESTOP_PAUSE_SECONDS + 30 + STOP_MARGIN_SECONDS
        )

    return run.settled(check)


@pulumi.runtime.test
def test_the_autoscaler_owns_the_replica_count():
    run = harness.run_example("kubernetes", **DEPLOYED)

    def check(_):
        deployment = inputs(run, DEPLOYMENT)
        assert "replicas" not in deployment["spec"]
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
        hpa = inputs(run, HPA)["spec"]
        assert hpa["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "reranker-kubernetes",
        }
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
        assert hpa["metrics"] == [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
            }
        ]
        assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
        pdb = inputs(run, PDB)["spec"]
        assert pdb == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
        service = inputs(run, SERVICE)["spec"]
        assert service["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert service["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["selector"].items() <= labels.items()
        assert inputs(run, INGRESS)["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/proxy-body-size": "3m"}
        ingress = inputs(run, INGRESS)["spec"]
        assert ingress["ingressClassName"] == "nginx"
        assert ingress["tls"] == [{"hosts": ["rerank.example.com"], "secretName": "rerank-example-com-tls"}]
        backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend == {"name": "reranker-kubernetes", "port": {"name": "http"}}

    return run.settled(check)


# ---- variants ------------------------------------------------------------------------------------------


@pulumi.runtime.test
def test_a_fixed_count_sets_replicas_and_declares_no_autoscaler():
    run = harness.run_example(
        "kubernetes", **deployed(minInstances="3", maxInstances="3", targetCpuPercent=None)
    )

    def check(outputs):
        validate_all(manifests(run))
        assert inputs(run, DEPLOYMENT)["spec"]["replicas"] == 3
        assert run.of_type(HPA) == []
        assert outputs["kubeAutoscaler"] == "none"

    return run.settled(check)


@pulumi.runtime.test
def test_a_load_balancer_without_ingress_gives_its_address_as_the_url():
    run = harness.run_example(
        "kubernetes",
        **deployed(
            kubeServiceType="LoadBalancer",
            kubeServicePort="8080",
            kubeIngressHost=None,
            kubeIngressClass=None,
            kubeIngressTlsSecret=None,
            kubeIngressAnnotations=None,
        ),
    )

    def check(outputs):
        validate_all(manifests(run))
        assert run.of_type(INGRESS) == []
        assert inputs(run, SERVICE)["spec"]["type"] == "LoadBalancer"
        assert outputs["url"] == f"http://{harness.MOCK_LOAD_BALANCER_IP}:8080"
        assert outputs["healthUrl"] == f"http://{harness.MOCK_LOAD_BALANCER_IP}:8080{HEALTH_PATH}"

    return run.settled(check)


@pulumi.runtime.test
def test_cluster_ip_without_ingress_is_the_in_cluster_address_and_sizes_follow_the_settings():
    run = harness.run_example(
        "kubernetes",
        **deployed(
            kubeIngressHost=None,
            kubeIngressClass=None,
            kubeIngressTlsSecret=None,
            kubeIngressAnnotations=None,
            workers="2",
            cpus="2",
            memoryMb="1792",
            kubeCreateNamespace="false",
            kubeNamespace="ml",
            kubeconfig="/home/ci/.kube/staging",
            kubeContext="staging",
            shutdownGraceSeconds="45",
        ),
    )

    def check(outputs):
        validate_all(manifests(run))
        assert run.of_type(NAMESPACE) == []
        assert outputs["url"] == "http://reranker-kubernetes.ml.svc.cluster.local"
        provider = run.one(PROVIDER).inputs
        assert provider["kubeconfig"] == "/home/ci/.kube/staging" and provider["context"] == "staging"
        assert run.one(DEPLOYMENT).provider and "kubernetes" in run.one(DEPLOYMENT).provider
        pod = inputs(run, DEPLOYMENT)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["resources"]["limits"] == {"cpu": "2000m", "memory": "1792Mi"}
        assert container["resources"]["requests"] == container["resources"]["limits"]
        assert {"name": "WEB_CONCURRENCY", "value": "2"} in container["env"]
        assert (
            pod["terminationGracePeriodSeconds"]
            == k8s_target.PRESTOP_PAUSE_SECONDS + 45 + STOP_MARGIN_SECONDS
        )
        assert inputs(run, DEPLOYMENT)["metadata"]["namespace"] == "ml"

    return run.settled(check)


@pulumi.runtime.test
def test_a_prebuilt_image_with_an_existing_pull_secret_is_deployed_as_is():
    run = harness.run_example(
        "kubernetes",
        set={
            "buildImage": "false",
            "imageName": "ghcr.io/acme/reranker@sha256:" + "ab" * 32,
            "kubeImagePullSecret": "ghcr-pull",
        },
        secrets={"apiKeys": API_KEYS},
    )

    def check(outputs):
        validate_all(manifests(run))
        assert run.of_type(IMAGE) == []
        assert [r.name for r in run.of_type(SECRET)] == ["reranker-kubernetes-env"]
        pod = inputs(run, DEPLOYMENT)["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "ghcr-pull"}]
        assert pod["containers"][0]["image"] == "ghcr.io/acme/reranker@sha256:" + "ab" * 32
        assert outputs["imageDigest"] == "sha256:" + "ab" * 32

    return run.settled(check)


@pulumi.runtime.test
def test_preview_declares_the_same_objects():
    mocks = harness.configure_example("kubernetes", preview=True, **DEPLOYED)
    from infra import program

    run = harness.Run(program.run(), mocks)

    def check(_):
        assert DEPLOYMENT in run.types() and HPA in run.types()

    return run.settled(check)


# ---- what it refuses -----------------------------------------------------------------------------------

REFUSED = {
    "requests in flight are not a Kubernetes scaling signal": (
        {"concurrency": "8"},
        [
            "reranker:concurrency cannot be honoured",
            "HorizontalPodAutoscaler scales on CPU",
            "pulumi config rm concurrency",
        ],
    ),
    "no scale to zero": (
        {"minInstances": "0", "maxInstances": "3"},
        ["reranker:minInstances=0", "pulumi config set minInstances 1"],
    ),
    "a namespace that is no DNS label": (
        {"kubeNamespace": "Reranker_Prod"},
        ["reranker:kubeNamespace='Reranker_Prod'"],
    ),
    "an ingress host with a scheme": (
        {"kubeIngressHost": "https://rerank.example.com"},
        ["reranker:kubeIngressHost="],
    ),
    "TLS without an ingress host": (
        {"kubeIngressHost": None, "kubeIngressClass": None},
        ["reranker:kubeIngressTlsSecret is set but kubeIngressHost is not"],
    ),
    "a service type Kubernetes does not have": (
        {"kubeServiceType": "Ingress"},
        ["reranker:kubeServiceType='Ingress'"],
    ),
    "a local image name the cluster cannot pull": (
        {"imageName": "reranker:prod"},
        ["is a local name, but the cluster pulls"],
    ),
    "too little memory for the workers": (
        {"memoryMb": "1024", "workers": "2"},
        [
            "reranker:memoryMb=1024 is too small for 2 workers",
            f"set memoryMb >= {sizing.required_memory_mb(2)}",
        ],
    ),
    "kubeconfig contents in plain text": (
        {"kubeconfig": "apiVersion: v1\nclusters:\n- cluster: {}\n"},
        [
            "reranker:kubeconfig holds a kubeconfig's contents",
            "pulumi config set --secret kubernetes:kubeconfig",
        ],
    ),
    "a scaling range upside down": (
        {"minInstances": "4", "maxInstances": "2"},
        ["reranker:maxInstances=2 is below minInstances=4"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_a_setting_kubernetes_cannot_honour_fails_preview_naming_the_key_and_the_fix(case):
    changes, expected = REFUSED[case]
    message = harness.refusal("kubernetes", **deployed(**changes))
    for text in expected:
        assert text in message, message


def test_production_without_any_authentication_is_refused():
    message = harness.refusal(
        "kubernetes", set=DEPLOYED["set"], secrets={"registryPassword": FAKE_SECRETS["registryPassword"]}
    )
    assert "reranker:apiKeys (RERANK_API_KEYS) is required by stack kubernetes but not set" in message
    assert "pulumi config set --secret apiKeys" in message


def test_startup_probe_threshold_rounds_the_start_period_up():
    from dataclasses import replace

    from infra.config import load_stack_file
    from infra.spec import build_spec

    spec = build_spec(load_stack_file("kubernetes", harness.example_file("kubernetes"), deploy=False))
    odd = replace(spec, health=replace(spec.health, start_period_seconds=121))
    assert k8s_target.startup_failure_threshold(odd) == math.ceil(121 / 5) + 3


@pulumi.runtime.test
def test_the_schema_check_rejects_what_a_cluster_would():
    """The validation is real: a misspelt field or a wrong type in any object fails it."""
    run = harness.run_example("kubernetes", **DEPLOYED)

    def check(_):
        objects = manifests(run)
        deployment = next(o for o in objects if o["kind"] == "Deployment")
        deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = []
        with pytest.raises(AssertionError, match="readinessProbes"):
            validate_all([deployment])
        hpa = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")
        hpa["spec"]["minReplicas"] = "two"
        with pytest.raises(AssertionError, match="minReplicas"):
            validate_all([hpa])

    return run.settled(check)


@pulumi.runtime.test
def test_the_objects_are_also_valid_for_the_oldest_kubernetes_the_readme_names():
    """(1.29's schema has the preStop `sleep` field too, but behind an alpha feature gate: 1.30 turns it on.)"""
    run = harness.run_example("kubernetes", **DEPLOYED)

    def check(_):
        validate_all(manifests(run), K8S_MINIMUM)
        assert f"Kubernetes {K8S_MINIMUM} or later" in (harness.ROOT / "README.md").read_text()

    return run.settled(check)
