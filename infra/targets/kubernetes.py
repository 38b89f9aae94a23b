"""Target `kubernetes`: any cluster reachable from a kubeconfig (pulumi-kubernetes). The scale-out path.

What it declares, all from the one DeploymentSpec:
- a Namespace (Pod Security Standard `restricted` enforced: the pod below satisfies it), unless
  `kubeCreateNamespace: false` names an existing one;
- a Secret holding the secret variables (immutable and auto-named: a changed secret is a new Secret,
  so the Deployment rolls), read by the container through `secretKeyRef`; and, from
  registryUsername/registryPassword, an image pull secret;
- a Deployment: uid/gid 10001, non-root, read-only root filesystem with a memory-backed /tmp, every
  capability dropped, no privilege escalation, seccomp RuntimeDefault, no service-account token;
  CPU and memory requests = limits (Guaranteed QoS) from sizing; startup, readiness and liveness
  probes on the health route; a preStop pause so endpoints drop the pod before SIGTERM, and
  terminationGracePeriodSeconds = that pause + the shutdown grace + the stop margin;
- a Service (ClusterIP by default, or LoadBalancer / NodePort);
- a HorizontalPodAutoscaler (autoscaling/v2, CPU utilisation) when maxInstances > minInstances: the
  Deployment then leaves `replicas` out, so a `pulumi up` never fights the autoscaler;
- a PodDisruptionBudget (at most one pod voluntarily down at a time);
- an Ingress when `kubeIngressHost` is set.
The manifests are validated offline against the Kubernetes OpenAPI schemas in the tests.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import HEALTH_PATH, Key, StackConfig, _Reader, check_registry_image, refuse_scaling
from infra.spec import DeploymentSpec
from infra.targets import _image
from infra.targets._base import Deployment, dns_label

NAME = "kubernetes"

SERVICE_TYPES = ("ClusterIP", "LoadBalancer", "NodePort")
PRESTOP_PAUSE_SECONDS = 5  # time for the endpoint controller and ingress to stop sending traffic
LIVENESS_PERIOD_SECONDS = 10
LIVENESS_FAILURES = 6  # a minute of failed checks: a busy (compute-bound) pod is slow, not dead
SCALE_DOWN_WINDOW_SECONDS = 300  # a new pod costs a model load: scale in slowly
DEFAULT_TARGET_CPU_PERCENT = 70
APP_LABEL = "reranker"
SIZES: tuple = ()  # no size table: any memoryMb/cpus the nodes can hold (requests = limits)

KEYS: tuple[Key, ...] = (
    Key("kubeconfig", "kubernetes: path of the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"),
    Key("kubeContext", "kubernetes: kubeconfig context (default: its current context)"),
    Key("kubeNamespace", "kubernetes: namespace (default `reranker-<stack>`)"),
    Key("kubeCreateNamespace", "kubernetes: create the namespace (`false`: it exists already)"),
    Key("kubeServiceType", "kubernetes: Service type, " + ", ".join(SERVICE_TYPES)),
    Key("kubeServicePort", "kubernetes: port the Service exposes (default 80)"),
    Key("kubeIngressHost", "kubernetes: host name of an Ingress to create (none: no Ingress)"),
    Key("kubeIngressClass", "kubernetes: ingressClassName of that Ingress (default: the cluster's default)"),
    Key("kubeIngressTlsSecret", "kubernetes: TLS secret of that Ingress (then the url is https)"),
    Key("kubeIngressAnnotations", "kubernetes: annotations of that Ingress (map)"),
    Key("kubeImagePullSecret", "kubernetes: existing image pull secret (default: made from registry*)"),
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_NAME = re.compile(r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Settings:
    service_name: str
    namespace: str
    create_namespace: bool = True
    kubeconfig: str | None = None
    context: str | None = None
    service_type: str = "ClusterIP"
    service_port: int = 80
    ingress_host: str | None = None
    ingress_class: str | None = None
    ingress_tls_secret: str | None = None
    ingress_annotations: dict[str, str] = field(default_factory=dict)
    image_pull_secret: str | None = None
    cpu_millis: int = 1000
    min_replicas: int = 1
    max_replicas: int = 1
    target_cpu_percent: int = DEFAULT_TARGET_CPU_PERCENT
    pulls_from_registry: bool = True

    @property
    def autoscaled(self) -> bool:
        return self.max_replicas > self.min_replicas


def parse(r: _Reader, common: StackConfig) -> Settings:
    """Read and check the kubernetes keys; problems go to `r` with the command that fixes them."""
    stack = common.stack
    default_namespace = dns_label(f"reranker-{stack}")
    namespace = r.string("kubeNamespace", default_namespace) or default_namespace
    if not _DNS_LABEL.match(namespace):
        r.problem(
            "kubeNamespace",
            f"={namespace!r} is not a Kubernetes namespace name (lower-case letters, digits and '-', "
            f"at most 63) (pulumi config set kubeNamespace {default_namespace})",
        )
    service_type = r.string("kubeServiceType", "ClusterIP", SERVICE_TYPES) or "ClusterIP"
    service_port = r.integer("kubeServicePort", 80, 1, 65535)
    ingress_host = r.string("kubeIngressHost")
    if ingress_host is not None and not _DNS_NAME.match(ingress_host):
        r.problem(
            "kubeIngressHost",
            f"={ingress_host!r} is not a DNS host name (no scheme, port or path), "
            "e.g. pulumi config set kubeIngressHost rerank.example.com",
        )
    ingress_class = r.string("kubeIngressClass")
    tls_secret = r.string("kubeIngressTlsSecret")
    annotations = r.mapping("kubeIngressAnnotations")
    if ingress_host is None:
        for key, value in (("kubeIngressClass", ingress_class), ("kubeIngressTlsSecret", tls_secret)):
            if value is not None:
                r.problem(key, "is set but kubeIngressHost is not (pulumi config set kubeIngressHost <host>)")
        if annotations:
            r.problem("kubeIngressAnnotations", "is set but kubeIngressHost is not")

    image_pull_secret = r.string("kubeImagePullSecret")
    kubeconfig = r.string("kubeconfig")
    if kubeconfig is not None and ("\n" in kubeconfig or "clusters:" in kubeconfig):
        r.problem(
            "kubeconfig",
            "holds a kubeconfig's contents (credentials) in plain text; it takes a file path. Pass the "
            "contents as the provider's secret instead: pulumi config rm kubeconfig; "
            "pulumi config set --secret kubernetes:kubeconfig < ~/.kube/config",
        )
        kubeconfig = None
    if common.build_image or image_pull_secret is not None:
        check_registry_image(r, common.image_name, "the cluster", r.deploy)

    scaling = common.scaling
    if scaling.min_instances < 1:
        r.problem(
            "minInstances",
            "=0: a HorizontalPodAutoscaler keeps at least one pod (scale-to-zero is an alpha feature "
            "gate); pulumi config set minInstances 1",
        )
    refuse_scaling(
        r,
        scaling,
        ("concurrency",),
        "a Kubernetes Service does not route by requests in flight, the HorizontalPodAutoscaler scales "
        "on CPU (targetCpuPercent)",
    )
    cpus = common.cpus if common.cpus is not None else float(common.workers)
    if cpus < common.workers:
        r.warnings.append(
            f"reranker:cpus={cpus:g} is less than one CPU per worker (workers={common.workers}): "
            "the workers share it and each is slower"
        )
    return Settings(
        service_name=dns_label(f"reranker-{stack}"),
        namespace=namespace,
        create_namespace=r.boolean("kubeCreateNamespace", True),
        kubeconfig=kubeconfig,
        context=r.string("kubeContext"),
        service_type=service_type,
        service_port=service_port,
        ingress_host=ingress_host,
        ingress_class=ingress_class,
        ingress_tls_secret=tls_secret,
        ingress_annotations=annotations,
        image_pull_secret=image_pull_secret,
        cpu_millis=max(1, round(cpus * 1000)),
        min_replicas=max(1, scaling.min_instances),
        max_replicas=max(1, scaling.max_instances),
        target_cpu_percent=scaling.target_cpu_percent or DEFAULT_TARGET_CPU_PERCENT,
    )


# ---- the objects -------------------------------------------------------------------------------------


def labels(spec: DeploymentSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP_LABEL, "app.kubernetes.io/instance": spec.name}


def _all_labels(spec: DeploymentSpec) -> dict[str, str]:
    return {
        **labels(spec),
        "app.kubernetes.io/part-of": APP_LABEL,
        "app.kubernetes.io/managed-by": "pulumi",
        "reranker/stack": spec.stack,
    }


def _tmpfs_size_mib(options: str) -> int:
    match = re.search(r"size=(\d+)([kmg]?)", options)
    if not match:
        return 64
    number, unit = int(match.group(1)), match.group(2)
    return max(
        1,
        {"k": math.ceil(number / 1024), "m": number, "g": number * 1024, "": math.ceil(number / 2**20)}[unit],
    )


def startup_failure_threshold(spec: DeploymentSpec) -> int:
    """Startup probe attempts: the whole start period (model load + warm-up), then `retries` more."""
    health = spec.health
    return math.ceil(health.start_period_seconds / health.interval_seconds) + health.retries


def termination_grace_seconds(spec: DeploymentSpec) -> int:
    """Counted from the start of preStop: the pause, then the service's grace and the stop margin."""
    return PRESTOP_PAUSE_SECONDS + spec.stop_grace_seconds


def container(
    spec: DeploymentSpec, settings: Settings, image: Any, secret_name: Any
) -> k8s.core.v1.ContainerArgs:
    health = spec.health
    env: list[k8s.core.v1.EnvVarArgs] = [k8s.core.v1.EnvVarArgs(name=n, value=v) for n, v in spec.env.items()]
    env += [
        k8s.core.v1.EnvVarArgs(
            name=n,
            value_from=k8s.core.v1.EnvVarSourceArgs(
                secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret_name, key=n)
            ),
        )
        for n in spec.secret_env
    ]

    def http_probe(period: int, failures: int) -> k8s.core.v1.ProbeArgs:
        return k8s.core.v1.ProbeArgs(
            http_get=k8s.core.v1.HTTPGetActionArgs(path=HEALTH_PATH, port="http"),
            period_seconds=period,
            timeout_seconds=health.timeout_seconds,
            failure_threshold=failures,
        )

    quantities = {"cpu": f"{settings.cpu_millis}m", "memory": f"{spec.memory_mb}Mi"}
    return k8s.core.v1.ContainerArgs(
        name="reranker",
        image=image,
        image_pull_policy="IfNotPresent",
        ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=spec.port, protocol="TCP")],
        env=env,
        resources=k8s.core.v1.ResourceRequirementsArgs(requests=dict(quantities), limits=dict(quantities)),
        startup_probe=http_probe(health.interval_seconds, startup_failure_threshold(spec)),
        readiness_probe=http_probe(health.interval_seconds, health.retries),
        liveness_probe=http_probe(LIVENESS_PERIOD_SECONDS, LIVENESS_FAILURES),
        lifecycle=k8s.core.v1.LifecycleArgs(
            pre_stop=k8s.core.v1.LifecycleHandlerArgs(
                sleep=k8s.core.v1.SleepActionArgs(seconds=PRESTOP_PAUSE_SECONDS)
            )
        ),
        security_context=k8s.core.v1.SecurityContextArgs(
            run_as_non_root=True,
            run_as_user=int(spec.user),
            run_as_group=int(spec.user),
            read_only_root_filesystem=spec.read_only_root_filesystem,
            allow_privilege_escalation=False,
            privileged=False,
            capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
        ),
        volume_mounts=[
            k8s.core.v1.VolumeMountArgs(name=_volume_name(path), mount_path=path) for path in spec.tmpfs
        ],
    )


def _volume_name(path: str) -> str:
    return "scratch-" + (re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "root")


def pod_spec(
    spec: DeploymentSpec, settings: Settings, image: Any, secret_name: Any, pull_secret: Any
) -> k8s.core.v1.PodSpecArgs:
    return k8s.core.v1.PodSpecArgs(
        containers=[container(spec, settings, image, secret_name)],
        automount_service_account_token=False,
        enable_service_links=False,  # no FOO_SERVICE_HOST variables from other Services in the namespace
        termination_grace_period_seconds=termination_grace_seconds(spec),
        security_context=k8s.core.v1.PodSecurityContextArgs(
            run_as_non_root=True,
            run_as_user=int(spec.user),
            run_as_group=int(spec.user),
            fs_group=int(spec.user),
            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
        ),
        image_pull_secrets=[k8s.core.v1.LocalObjectReferenceArgs(name=pull_secret)] if pull_secret else None,
        volumes=[
            k8s.core.v1.VolumeArgs(
                name=_volume_name(path),
                # Memory-backed like the Docker tmpfs: its pages count against the memory limit (sizing headroom).
                empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(
                    medium="Memory", size_limit=f"{_tmpfs_size_mib(options)}Mi"
                ),
            )
            for path, options in spec.tmpfs.items()
        ]
        or None,
        topology_spread_constraints=[
            k8s.core.v1.TopologySpreadConstraintArgs(
                max_skew=1,
                topology_key="kubernetes.io/hostname",
                when_unsatisfiable="ScheduleAnyway",
                label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels(spec)),
            )
        ],
    )


def service_url(spec: DeploymentSpec, settings: Settings, status: Any) -> str:
    """The url a client uses: the Ingress host, the load balancer's address, or the in-cluster name."""
    if settings.ingress_host:
        scheme = "https" if settings.ingress_tls_secret else "http"
        return f"{scheme}://{settings.ingress_host}"
    port = "" if settings.service_port == 80 else f":{settings.service_port}"
    if settings.service_type == "LoadBalancer":
        ingress = _get(_get(status, "load_balancer"), "ingress") or []
        if ingress:
            address = _get(ingress[0], "hostname") or _get(ingress[0], "ip")
            if address:
                return f"http://{address}{port}"
    return f"http://{spec.name}.{settings.namespace}.svc.cluster.local{port}"


def _get(value: Any, name: str) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
        return value.get(name, value.get(camel))
    return getattr(value, name, None)


def docker_config_json(server: str, username: str, password: str) -> str:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {server: {"username": username, "password": password, "auth": auth}}})


class KubernetesDeployment(Deployment):
    def __init__(
        self,
        name: str,
        spec: DeploymentSpec,
        settings: Settings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("reranker:targets:KubernetesDeployment", name, None, opts)
        provider = None
        if settings.kubeconfig or settings.context:
            provider = k8s.Provider(
                f"{name}-cluster",
                kubeconfig=settings.kubeconfig,
                context=settings.context,
                opts=pulumi.ResourceOptions(parent=self),
            )
        on_cluster = pulumi.ResourceOptions(parent=self, provider=provider)
        common_labels = _all_labels(spec)
        objects: list[Any] = []  # every Kubernetes object, for the kubeObjects output

        def meta(object_name: str | None = None, **extra: Any) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(
                name=object_name, namespace=namespace, labels=dict(common_labels), **extra
            )

        namespace: Any = settings.namespace
        if settings.create_namespace:
            created = k8s.core.v1.Namespace(
                f"{name}-namespace",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=settings.namespace,
                    labels={
                        **common_labels,
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": "latest",
                    },
                ),
                opts=on_cluster,
            )
            namespace = created.metadata.name
            objects.append(created)

        image = _image.publish(name, spec.image, self)

        secret_name: Any = None
        if spec.secret_env:
            secret = k8s.core.v1.Secret(
                f"{name}-env",
                metadata=meta(),  # auto-named: new values -> a new Secret -> a rollout
                type="Opaque",
                immutable=True,
                string_data={n: s.as_output() for n, s in spec.secret_env.items()},
                opts=pulumi.ResourceOptions.merge(
                    on_cluster, pulumi.ResourceOptions(additional_secret_outputs=["stringData", "data"])
                ),
            )
            secret_name = secret.metadata.name
            objects.append(secret)

        pull_secret: Any = settings.image_pull_secret
        registry = spec.image
        if pull_secret is None and registry.registry_username and registry.registry_password:
            server, username = registry.registry_server or "docker.io", registry.registry_username
            pull = k8s.core.v1.Secret(
                f"{name}-pull",
                metadata=meta(),
                type="kubernetes.io/dockerconfigjson",
                string_data={
                    ".dockerconfigjson": registry.registry_password.as_output().apply(
                        lambda password: docker_config_json(server, username, password)
                    )
                },
                opts=pulumi.ResourceOptions.merge(
                    on_cluster, pulumi.ResourceOptions(additional_secret_outputs=["stringData", "data"])
                ),
            )
            pull_secret = pull.metadata.name
            objects.append(pull)

        selector = k8s.meta.v1.LabelSelectorArgs(match_labels=labels(spec))
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=meta(spec.name),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                # Left out when the HPA owns it: an explicit value would reset the replica count on every up.
                replicas=None if settings.autoscaled else settings.min_replicas,
                selector=selector,
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_surge=1, max_unavailable=0),
                ),
                revision_history_limit=5,
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=dict(common_labels)),
                    spec=pod_spec(spec, settings, image.ref, secret_name, pull_secret),
                ),
            ),
            opts=on_cluster,
        )

        objects.append(self.deployment)
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta(spec.name),
            spec=k8s.core.v1.ServiceSpecArgs(
                type=settings.service_type,
                selector=labels(spec),
                ports=[
                    k8s.core.v1.ServicePortArgs(
                        name="http", port=settings.service_port, target_port="http", protocol="TCP"
                    )
                ],
            ),
            opts=on_cluster,
        )

        objects.append(self.service)

        if settings.autoscaled:
            objects.append(
                k8s.autoscaling.v2.HorizontalPodAutoscaler(
                    f"{name}-hpa",
                    metadata=meta(spec.name),
                    spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                        scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                            api_version="apps/v1", kind="Deployment", name=self.deployment.metadata.name
                        ),
                        min_replicas=settings.min_replicas,
                        max_replicas=settings.max_replicas,
                        metrics=[
                            k8s.autoscaling.v2.MetricSpecArgs(
                                type="Resource",
                                resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                                    name="cpu",
                                    target=k8s.autoscaling.v2.MetricTargetArgs(
                                        type="Utilization", average_utilization=settings.target_cpu_percent
                                    ),
                                ),
                            )
                        ],
                        behavior=k8s.autoscaling.v2.HorizontalPodAutoscalerBehaviorArgs(
                            scale_down=k8s.autoscaling.v2.HPAScalingRulesArgs(
                                stabilization_window_seconds=SCALE_DOWN_WINDOW_SECONDS,
                                policies=[
                                    k8s.autoscaling.v2.HPAScalingPolicyArgs(
                                        type="Pods", value=1, period_seconds=60
                                    )
                                ],
                            )
                        ),
                    ),
                    opts=on_cluster,
                )
            )

        objects.append(
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb",
                metadata=meta(spec.name),
                spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(max_unavailable=1, selector=selector),
                opts=on_cluster,
            )
        )

        if settings.ingress_host:
            objects.append(
                k8s.networking.v1.Ingress(
                    f"{name}-ingress",
                    metadata=meta(spec.name, annotations=dict(settings.ingress_annotations) or None),
                    spec=k8s.networking.v1.IngressSpecArgs(
                        ingress_class_name=settings.ingress_class,
                        tls=[
                            k8s.networking.v1.IngressTLSArgs(
                                hosts=[settings.ingress_host], secret_name=settings.ingress_tls_secret
                            )
                        ]
                        if settings.ingress_tls_secret
                        else None,
                        rules=[
                            k8s.networking.v1.IngressRuleArgs(
                                host=settings.ingress_host,
                                http=k8s.networking.v1.HTTPIngressRuleValueArgs(
                                    paths=[
                                        k8s.networking.v1.HTTPIngressPathArgs(
                                            path="/",
                                            path_type="Prefix",
                                            backend=k8s.networking.v1.IngressBackendArgs(
                                                service=k8s.networking.v1.IngressServiceBackendArgs(
                                                    name=self.service.metadata.name,
                                                    port=k8s.networking.v1.ServiceBackendPortArgs(
                                                        name="http"
                                                    ),
                                                )
                                            ),
                                        )
                                    ]
                                ),
                            )
                        ],
                    ),
                    opts=on_cluster,
                )
            )

        ready = pulumi.Output.all(self.deployment.metadata, self.service.status)
        self.image_name = image.name
        self.image_digest = image.digest
        self.finish(
            ready.apply(lambda values: service_url(spec, settings, values[1])),
            {
                "kubeNamespace": namespace,
                "kubeService": self.service.metadata.name,
                "kubeAutoscaler": "hpa" if settings.autoscaled else "none",
                # Every object the stack owns, `Kind/name` (and what makes the outputs wait for all of them).
                "kubeObjects": pulumi.Output.all(
                    *[pulumi.Output.all(o.kind, o.metadata.name).apply("/".join) for o in objects]
                ),
            },
        )


def deploy(name: str, cfg: StackConfig, spec: DeploymentSpec) -> KubernetesDeployment:
    return KubernetesDeployment(name, spec, cfg.target_settings)
