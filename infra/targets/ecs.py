"""Target `ecs`: AWS Fargate behind an Application Load Balancer (plain pulumi-aws resources).

AWS App Runner takes no new customers since 2026-04-30, so AWS means ECS. pulumi-aws 7.x has
`ecs.ExpressGatewayService` (ECS Express Mode: one resource that creates the load balancer, target
group and autoscaling), but its container takes no stop timeout (the graceful shutdown would be cut at
ECS's default), no read-only root filesystem, no dropped capabilities and no health-check grace period
for the model load, and it stops at 4 vCPU / 8 GB. So this target declares the Fargate service itself:

- an ECR repository (scan on push, the last 20 images kept) the image is pushed to with ECR's token;
- one Secrets Manager secret holding every secret variable as JSON, passed to the container as ECS
  `secrets` (valueFrom `<arn>:<NAME>::`): the task definition holds only ARNs;
- least-privilege roles: the execution role may pull from that repository, write to its log group and
  read that secret, nothing else; the task role has no permission at all (the service calls no AWS API);
- the task definition: CPU/memory the smallest valid Fargate combination that holds the footprint
  (infra/sizing.py), the container health check on the health route, stopTimeout from the shutdown
  grace, read-only root with an ephemeral /tmp volume, all capabilities dropped, the non-root user;
- security groups (the load balancer takes 80/443; the tasks take `port` from the load balancer only),
  the load balancer, its target group (health check on the health route, deregistration delay = the
  stop grace), listeners (HTTPS when `ecsCertificateArn` is set, HTTP redirecting to it);
- the ECS service (circuit breaker with rollback, health-check grace = the start period) and, with
  maxInstances above minInstances, Application Auto Scaling on average CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from infra import sizing
from infra.config import HEALTH_PATH, Key, StackConfig, _Reader, refuse_scaling, registry_host
from infra.spec import STOP_MARGIN_SECONDS, DeploymentSpec
from infra.targets import _image
from infra.targets._base import Deployment, dns_label
from infra.targets._keys import DELETION_PROTECTION, PUBLIC

NAME = "ecs"
KEYS: tuple[Key, ...] = (
    Key("awsRegion", "AWS region of the ECS service (required for ecs)"),
    PUBLIC,
    DELETION_PROTECTION,
    Key("ecsVpcId", "VPC of the service (default: the region's default VPC)"),
    Key(
        "ecsSubnetIds", "Subnets of the load balancer and the tasks, at least two zones (default: the VPC's)"
    ),
    Key("ecsAssignPublicIp", "Give tasks public IPs (needed in public subnets without a NAT gateway)"),
    Key("ecsCertificateArn", "ACM certificate for an HTTPS listener (HTTP then redirects to HTTPS)"),
    Key("ecsLogRetentionDays", "CloudWatch log retention of the service's logs, in days"),
)

# Fargate's CPU (units) -> memory (MB) combinations (docs.aws.amazon.com/AmazonECS/latest/developerguide/
# fargate-tasks-services.html#fargate-tasks-size).
_FARGATE_MEMORY = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),
    16384: tuple(range(32768, 122881, 8192)),
}
FARGATE_CPUS = tuple(units / 1024 for units in _FARGATE_MEMORY)
# List prices, us-east-1, Linux/x86, on demand (aws.amazon.com/fargate/pricing, 2025).
USD_PER_VCPU_HOUR = 0.04048
USD_PER_GB_HOUR = 0.004445
ALB_USD_PER_HOUR = 0.0225  # plus LCUs
HOURS_PER_MONTH = 730
MAX_STOP_TIMEOUT_SECONDS = 120  # Fargate's limit for a container's stopTimeout
MAX_START_PERIOD_SECONDS = 300  # ECS container health check startPeriod limit
DEFAULT_TARGET_CPU_PERCENT = 60


def _price(units: int, memory_mb: int) -> float:
    return round((units / 1024 * USD_PER_VCPU_HOUR + memory_mb / 1024 * USD_PER_GB_HOUR) * HOURS_PER_MONTH, 2)


# Every valid combination, cheapest first: the smallest that holds memory and CPU is the first that fits.
SIZES: tuple[sizing.Size, ...] = tuple(
    sorted(
        (
            sizing.Size(f"{units}/{memory}", memory, units / 1024, _price(units, memory))
            for units, memories in _FARGATE_MEMORY.items()
            for memory in memories
        ),
        key=lambda size: (size.usd_per_month, size.memory_mb),
    )
)


@dataclass(frozen=True)
class Settings:
    service_name: str
    region: str
    public: bool
    deletion_protection: bool
    vpc_id: str | None
    subnet_ids: tuple[str, ...]
    assign_public_ip: bool
    certificate_arn: str | None
    log_retention_days: int
    size: sizing.Size
    min_instances: int
    max_instances: int
    target_cpu_percent: int
    pulls_from_registry: bool = True

    @property
    def cpu_units(self) -> int:
        return int(self.size.cpus * 1024)

    @property
    def autoscaling(self) -> bool:
        return self.max_instances > self.min_instances


def pick_size(r: _Reader, common: StackConfig) -> sizing.Size:
    """The cheapest Fargate combination with at least memoryMb and `cpus` (default one vCPU per worker);
    an explicit `cpus` must be a Fargate CPU size."""
    cpus = common.cpus
    if cpus is not None and cpus not in FARGATE_CPUS:
        larger = next((c for c in FARGATE_CPUS if c >= cpus), FARGATE_CPUS[-1])
        r.problem(
            "cpus",
            f"={cpus:g} is not a Fargate CPU size ({', '.join(f'{c:g}' for c in FARGATE_CPUS)}); "
            f"pulumi config set cpus {larger:g}",
        )
        cpus = larger
    wanted = cpus if cpus is not None else float(common.workers)
    candidates = [s for s in SIZES if (s.cpus == wanted if cpus is not None else s.cpus >= wanted)]
    found = sizing.smallest_fitting(candidates, common.memory_mb)
    if found is None:
        anywhere = sizing.smallest_fitting(SIZES, common.memory_mb, wanted)
        if anywhere is None:
            r.problem(
                "memoryMb",
                f"={common.memory_mb} with {wanted:g} vCPU does not fit the largest Fargate task "
                "(16 vCPU, 120 GB); lower memoryMb or workers",
            )
            return SIZES[-1]
        r.problem(
            "memoryMb",
            f"={common.memory_mb}: Fargate gives {wanted:g} vCPU at most "
            f"{max(_FARGATE_MEMORY[int(wanted * 1024)])} MB; the smallest task that holds it is "
            f"{anywhere.cpus:g} vCPU / {anywhere.memory_mb} MB (pulumi config set cpus {anywhere.cpus:g})",
        )
        return anywhere
    return found


def parse(r: _Reader, common: StackConfig) -> Settings:
    region = r.string("awsRegion")
    public = r.boolean("public", False)
    deletion_protection = r.boolean("deletionProtection", True)
    vpc_id = r.string("ecsVpcId")
    subnet_ids = r.string_list("ecsSubnetIds")
    assign_public_ip = r.boolean("ecsAssignPublicIp", True)
    certificate_arn = r.string("ecsCertificateArn")
    retention = r.integer("ecsLogRetentionDays", 30, 1, 3653)
    if region is None and r.deploy:
        r.problem("awsRegion", "is required for target=ecs (pulumi config set awsRegion eu-west-1)")
    if subnet_ids and vpc_id is None:
        r.problem("ecsVpcId", "is needed with ecsSubnetIds (pulumi config set ecsVpcId vpc-...)")
    if subnet_ids and len(subnet_ids) < 2:
        r.problem(
            "ecsSubnetIds",
            "needs at least two subnets in different availability zones (an Application Load Balancer "
            "requires two): pulumi config set --path 'ecsSubnetIds[1]' subnet-...",
        )
    if certificate_arn is not None and not certificate_arn.startswith("arn:aws"):
        r.problem(
            "ecsCertificateArn", f"={certificate_arn!r} is not an ACM certificate ARN (arn:aws:acm:...)"
        )

    size = pick_size(r, common)
    scaling = common.scaling
    if scaling.min_instances < 1:
        r.problem(
            "minInstances",
            "=0: an ECS service cannot start a task when a request arrives (nothing to measure CPU on); "
            "pulumi config set minInstances 1",
        )
    refuse_scaling(
        r,
        scaling,
        ("concurrency",),
        "an Application Load Balancer does not cap concurrent requests per task; ECS scales on CPU "
        "(targetCpuPercent)",
    )
    limit = MAX_STOP_TIMEOUT_SECONDS - STOP_MARGIN_SECONDS
    if common.shutdown_grace_seconds > limit:
        r.problem(
            "shutdownGraceSeconds",
            f"={common.shutdown_grace_seconds}: Fargate waits at most {MAX_STOP_TIMEOUT_SECONDS} s after SIGTERM "
            f"(stopTimeout) and the service needs {STOP_MARGIN_SECONDS} s to exit; "
            f"pulumi config set shutdownGraceSeconds {limit}",
        )
    if common.start_period_seconds > MAX_START_PERIOD_SECONDS:
        r.problem(
            "startPeriodSeconds",
            f"={common.start_period_seconds}: an ECS container health check waits at most "
            f"{MAX_START_PERIOD_SECONDS} s (startPeriod); pulumi config set startPeriodSeconds {MAX_START_PERIOD_SECONDS}",
        )
    if not common.build_image and registry_host(common.image_name) is None:
        r.problem(
            "imageName",
            f"={common.image_name!r} is a local name, but ECS pulls the image from a registry; "
            "let the stack build and push it to ECR (pulumi config set buildImage true) or use a registry path",
        )
    return Settings(
        service_name=dns_label(f"reranker-{common.stack}", 100),
        region=region or "",
        public=public,
        deletion_protection=deletion_protection,
        vpc_id=vpc_id,
        subnet_ids=subnet_ids,
        assign_public_ip=assign_public_ip,
        certificate_arn=certificate_arn,
        log_retention_days=retention,
        size=size,
        min_instances=max(scaling.min_instances, 1),
        max_instances=max(scaling.max_instances, 1),
        target_cpu_percent=scaling.target_cpu_percent or DEFAULT_TARGET_CPU_PERCENT,
    )


def container_definition(
    spec: DeploymentSpec,
    image: str,
    *,
    secret_arn: str | None,
    log_group: str,
    region: str,
    credentials_arn: str | None = None,
) -> dict[str, Any]:
    """The one container of the task (plain values: the caller resolves the Outputs)."""
    health = spec.health
    definition: dict[str, Any] = {
        "name": "reranker",
        "image": image,
        "essential": True,
        "user": spec.user,
        "portMappings": [{"containerPort": spec.port, "protocol": "tcp"}],
        "environment": [{"name": name, "value": value} for name, value in spec.env.items()],
        "secrets": [{"name": name, "valueFrom": f"{secret_arn}:{name}::"} for name in spec.secret_env],
        "healthCheck": {
            "command": ["CMD-SHELL", health.command],
            "interval": health.interval_seconds,
            "timeout": health.timeout_seconds,
            "retries": health.retries,
            "startPeriod": health.start_period_seconds,
        },
        "stopTimeout": spec.stop_grace_seconds,
        "readonlyRootFilesystem": spec.read_only_root_filesystem,
        "linuxParameters": {"capabilities": {"drop": ["ALL"]}, "initProcessEnabled": True},
        "mountPoints": [{"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group,
                "awslogs-region": region,
                "awslogs-stream-prefix": "reranker",
            },
        },
    }
    if credentials_arn:
        definition["repositoryCredentials"] = {"credentialsParameter": credentials_arn}
    return definition


def _assume(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


def execution_policy(repository_arn: str | None, log_group_arn: str, secret_arns: list[str]) -> str:
    """What ECS itself needs to start the task: pull the image, write the logs, read the secrets."""
    statements: list[dict[str, Any]] = [
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"{log_group_arn}:*",
        }
    ]
    if repository_arn:
        statements += [
            # GetAuthorizationToken cannot be scoped to a repository.
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage",
                ],
                "Resource": repository_arn,
            },
        ]
    if secret_arns:
        statements.append(
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secret_arns}
        )
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


class EcsDeployment(Deployment):
    """The reranker as an ECS Fargate service behind an Application Load Balancer."""

    def __init__(
        self, name: str, cfg: StackConfig, spec: DeploymentSpec, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reranker:targets:EcsDeployment", name, None, opts)
        s: Settings = cfg.target_settings
        provider = aws.Provider(f"{name}-aws", region=s.region, opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        invoke = pulumi.InvokeOutputOptions(parent=self, provider=provider)

        # ---- image
        repository = None
        if spec.image.build:
            repository = aws.ecr.Repository(
                f"{name}-repository",
                name=s.service_name,
                image_tag_mutability="MUTABLE",
                image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                    scan_on_push=True
                ),
                force_delete=not s.deletion_protection,
                opts=child,
            )
            aws.ecr.LifecyclePolicy(
                f"{name}-repository-lifecycle",
                repository=repository.name,
                policy=json.dumps(
                    {
                        "rules": [
                            {
                                "rulePriority": 1,
                                "description": "keep the last 20 images",
                                "selection": {
                                    "tagStatus": "any",
                                    "countType": "imageCountMoreThan",
                                    "countNumber": 20,
                                },
                                "action": {"type": "expire"},
                            }
                        ]
                    }
                ),
                opts=child,
            )
            token = aws.ecr.get_authorization_token_output(registry_id=repository.registry_id, opts=invoke)
            tag = spec.image.name.rsplit("/", 1)[-1].partition(":")[2] or "latest"
            published = _image.publish(
                name,
                spec.image,
                self,
                image_name=repository.repository_url.apply(lambda url: f"{url}:{tag}"),
                registry=docker.RegistryArgs(
                    server=repository.repository_url,
                    username=token.user_name,
                    password=pulumi.Output.secret(token.password),
                ),
            )
        else:
            published = _image.publish(name, spec.image, self)
        self.image_name = published.name
        self.image_digest = published.digest

        # ---- secrets
        secret = None
        if spec.secret_env:
            secret = self._json_secret(
                f"{name}-secrets",
                f"{s.service_name}-",
                f"Secret environment variables of {s.service_name} (JSON, one key per variable)",
                {env_name: value.as_output() for env_name, value in spec.secret_env.items()},
                provider,
            )
        credentials = None
        if not spec.image.build and spec.image.registry_username and spec.image.registry_password:
            credentials = self._json_secret(
                f"{name}-registry-credentials",
                f"{s.service_name}-registry-",
                f"Registry login ECS pulls {spec.image.name} with",
                {
                    "username": spec.image.registry_username,
                    "password": spec.image.registry_password.as_output(),
                },
                provider,
            )

        # ---- logs and roles
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs", name=f"/ecs/{s.service_name}", retention_in_days=s.log_retention_days, opts=child
        )
        execution_role = aws.iam.Role(
            f"{name}-execution",
            description=f"ECS starts {s.service_name}: pull its image, write its logs, read its secrets",
            assume_role_policy=_assume("ecs-tasks.amazonaws.com"),
            opts=child,
        )
        secret_arns = [x.arn for x in (secret, credentials) if x is not None]
        aws.iam.RolePolicy(
            f"{name}-execution-policy",
            role=execution_role.id,
            policy=pulumi.Output.all(
                repository.arn if repository is not None else None, log_group.arn, *secret_arns
            ).apply(lambda values: execution_policy(values[0], values[1], list(values[2:]))),
            opts=child,
        )
        task_role = aws.iam.Role(
            f"{name}-task",
            description=f"{s.service_name} itself: no AWS permissions (the service calls no AWS API)",
            assume_role_policy=_assume("ecs-tasks.amazonaws.com"),
            opts=child,
        )

        # ---- network
        if s.vpc_id:
            vpc_id: Any = s.vpc_id
            subnet_ids: Any = list(s.subnet_ids)
            if not subnet_ids:
                subnet_ids = aws.ec2.get_subnets_output(
                    filters=[aws.ec2.GetSubnetsFilterArgs(name="vpc-id", values=[s.vpc_id])], opts=invoke
                ).ids
        else:
            vpc = aws.ec2.get_vpc_output(default=True, opts=invoke)
            vpc_id = vpc.id
            subnet_ids = aws.ec2.get_subnets_output(
                filters=[
                    aws.ec2.GetSubnetsFilterArgs(name="vpc-id", values=[vpc.id]),
                    aws.ec2.GetSubnetsFilterArgs(name="default-for-az", values=["true"]),
                ],
                opts=invoke,
            ).ids
        https = s.certificate_arn is not None
        listener_ports = [443, 80] if https else [80]
        lb_group = aws.ec2.SecurityGroup(
            f"{name}-lb",
            description=f"{s.service_name} load balancer: HTTP(S) in, the tasks' port out",
            vpc_id=vpc_id,
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp",
                    from_port=port,
                    to_port=port,
                    cidr_blocks=["0.0.0.0/0"]
                    if s.public
                    else ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
                    description="clients",
                )
                for port in listener_ports
            ],
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol="tcp",
                    from_port=spec.port,
                    to_port=spec.port,
                    cidr_blocks=["0.0.0.0/0"],
                    description="the tasks",
                )
            ],
            opts=child,
        )
        task_group = aws.ec2.SecurityGroup(
            f"{name}-tasks",
            description=f"{s.service_name} tasks: the service port from the load balancer only",
            vpc_id=vpc_id,
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp",
                    from_port=spec.port,
                    to_port=spec.port,
                    security_groups=[lb_group.id],
                    description="the load balancer",
                )
            ],
            # The image pull (ECR), the secrets (Secrets Manager) and the logs (CloudWatch) go over HTTPS.
            egress=[
                aws.ec2.SecurityGroupEgressArgs(
                    protocol="tcp",
                    from_port=443,
                    to_port=443,
                    cidr_blocks=["0.0.0.0/0"],
                    description="AWS APIs",
                )
            ],
            opts=child,
        )
        balancer = aws.lb.LoadBalancer(
            f"{name}-lb",
            load_balancer_type="application",
            internal=not s.public,
            security_groups=[lb_group.id],
            subnets=subnet_ids,
            enable_deletion_protection=s.deletion_protection,
            drop_invalid_header_fields=True,
            opts=child,
        )
        health = spec.health
        target_group = aws.lb.TargetGroup(
            f"{name}-tg",
            port=spec.port,
            protocol="HTTP",
            target_type="ip",
            vpc_id=vpc_id,
            deregistration_delay=spec.stop_grace_seconds,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                path=HEALTH_PATH,
                port="traffic-port",
                protocol="HTTP",
                matcher="200",
                interval=10,
                timeout=health.timeout_seconds + 1,
                healthy_threshold=2,
                unhealthy_threshold=health.retries,
            ),
            opts=child,
        )
        forward = [aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=target_group.arn)]
        listeners = []
        if https:
            listeners.append(
                aws.lb.Listener(
                    f"{name}-https",
                    load_balancer_arn=balancer.arn,
                    port=443,
                    protocol="HTTPS",
                    certificate_arn=s.certificate_arn,
                    ssl_policy="ELBSecurityPolicy-TLS13-1-2-2021-06",
                    default_actions=forward,
                    opts=child,
                )
            )
            listeners.append(
                aws.lb.Listener(
                    f"{name}-http",
                    load_balancer_arn=balancer.arn,
                    port=80,
                    protocol="HTTP",
                    default_actions=[
                        aws.lb.ListenerDefaultActionArgs(
                            type="redirect",
                            redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                                status_code="HTTP_301", protocol="HTTPS", port="443"
                            ),
                        )
                    ],
                    opts=child,
                )
            )
        else:
            listeners.append(
                aws.lb.Listener(
                    f"{name}-http",
                    load_balancer_arn=balancer.arn,
                    port=80,
                    protocol="HTTP",
                    default_actions=forward,
                    opts=child,
                )
            )

        # ---- task and service
        cluster = aws.ecs.Cluster(f"{name}-cluster", name=s.service_name, opts=child)
        definitions = pulumi.Output.all(
            published.ref,
            secret.arn if secret is not None else None,
            log_group.name,
            credentials.arn if credentials is not None else None,
        ).apply(
            lambda v: json.dumps(
                [
                    container_definition(
                        spec, v[0], secret_arn=v[1], log_group=v[2], region=s.region, credentials_arn=v[3]
                    )
                ]
            )
        )
        task = aws.ecs.TaskDefinition(
            f"{name}-task",
            family=s.service_name,
            cpu=str(s.cpu_units),
            memory=str(s.size.memory_mb),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                cpu_architecture="X86_64", operating_system_family="LINUX"
            ),
            execution_role_arn=execution_role.arn,
            task_role_arn=task_role.arn,
            volumes=[aws.ecs.TaskDefinitionVolumeArgs(name="tmp")],
            container_definitions=definitions,
            opts=child,
        )
        self.service = aws.ecs.Service(
            f"{name}-service",
            name=s.service_name,
            cluster=cluster.arn,
            task_definition=task.arn,
            launch_type="FARGATE",
            desired_count=s.min_instances,
            health_check_grace_period_seconds=health.start_period_seconds,
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(
                enable=True, rollback=True
            ),
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=subnet_ids, security_groups=[task_group.id], assign_public_ip=s.assign_public_ip
            ),
            load_balancers=[
                aws.ecs.ServiceLoadBalancerArgs(
                    target_group_arn=target_group.arn, container_name="reranker", container_port=spec.port
                )
            ],
            wait_for_steady_state=True,
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=provider,
                depends_on=listeners,
                # The autoscaler owns the task count once it runs.
                ignore_changes=["desiredCount"] if s.autoscaling else None,
            ),
        )
        ready: list[Any] = [balancer.dns_name, self.service.id]
        if s.autoscaling:
            scaling_target = aws.appautoscaling.Target(
                f"{name}-scaling",
                min_capacity=s.min_instances,
                max_capacity=s.max_instances,
                resource_id=pulumi.Output.concat("service/", cluster.name, "/", self.service.name),
                scalable_dimension="ecs:service:DesiredCount",
                service_namespace="ecs",
                opts=child,
            )
            policy = aws.appautoscaling.Policy(
                f"{name}-cpu",
                policy_type="TargetTrackingScaling",
                resource_id=scaling_target.resource_id,
                scalable_dimension=scaling_target.scalable_dimension,
                service_namespace=scaling_target.service_namespace,
                target_tracking_scaling_policy_configuration=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgs(
                    target_value=float(s.target_cpu_percent),
                    predefined_metric_specification=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs(
                        predefined_metric_type="ECSServiceAverageCPUUtilization"
                    ),
                    scale_in_cooldown=300,
                    scale_out_cooldown=60,
                ),
                opts=child,
            )
            ready.append(policy.id)  # deployed means: serving, and scaling

        scheme = "https" if https else "http"
        self.finish(
            pulumi.Output.all(*ready).apply(lambda v: f"{scheme}://{v[0]}"),
            {
                "ecsCpu": s.size.cpus,
                "ecsMemoryMb": s.size.memory_mb,
                "listPriceUsdPerMonthPerInstance": s.size.usd_per_month,
                "public": s.public,
            },
        )

    def _json_secret(
        self, name: str, prefix: str, description: str, values: dict[str, Any], provider: aws.Provider
    ) -> aws.secretsmanager.Secret:
        """A Secrets Manager secret holding `values` as JSON (the value stays a Pulumi secret)."""
        secret = aws.secretsmanager.Secret(
            name,
            name_prefix=prefix,
            description=description,
            recovery_window_in_days=7,
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-value",
            secret_id=secret.id,
            secret_string=pulumi.Output.secret(pulumi.Output.json_dumps(values)),
            opts=pulumi.ResourceOptions(
                parent=self, provider=provider, additional_secret_outputs=["secretString"]
            ),
        )
        return secret


def deploy(name: str, cfg: StackConfig, spec: DeploymentSpec) -> EcsDeployment:
    return EcsDeployment(name, cfg, spec)
