"""Target `ecs` against Pulumi's mocks, from infra/examples/Pulumi.ecs.yaml: Fargate behind an ALB, the image in
ECR, secrets in Secrets Manager passed as container `secrets`, least-privilege roles, the Fargate size, CPU
autoscaling, and every setting ECS cannot honour refused before anything is declared."""

from __future__ import annotations

import json

import pulumi
import pytest

from infra.targets import ecs
from tests.infra import harness
from tests.infra.harness import (
    AWS_ACCOUNT,
    BUILT_DIGEST,
    FAKE_SECRETS,
    FAKE_TOKENS,
    plain,
    strings_inside_secrets,
)
from tests.infra.test_program import assert_no_secret_in_clear
from tests.infra.test_validation import refused

TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"
REPOSITORY = "aws:ecr/repository:Repository"
IMAGE = "docker:index/image:Image"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
LB = "aws:lb/loadBalancer:LoadBalancer"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
LISTENER = "aws:lb/listener:Listener"
SG = "aws:ec2/securityGroup:SecurityGroup"
SCALING_TARGET = "aws:appautoscaling/target:Target"
SCALING_POLICY = "aws:appautoscaling/policy:Policy"
REPO_URL = f"{AWS_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/reranker-ecs"


def run(set_=None, secrets=None):
    return harness.run_stack(
        "ecs", set=set_ or {}, secrets={"apiKeys": FAKE_SECRETS["apiKeys"], **(secrets or {})}
    )


def the_container(r) -> dict:
    (only,) = json.loads(plain(r.one(TASK).inputs["containerDefinitions"]))
    return only


@pulumi.runtime.test
def test_the_example_deploys_fargate_behind_a_load_balancer():
    r = run(secrets={"supabaseJwtPublicKey": FAKE_SECRETS["supabaseJwtPublicKey"]})

    def check(outputs):
        assert r.one("pulumi:providers:aws").inputs["region"] == "us-east-1"
        repository = r.one(REPOSITORY).inputs
        assert repository["name"] == "reranker-ecs" and repository["forceDelete"] is False
        assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
        image = r.one(IMAGE).inputs
        assert image["imageName"] == f"{REPO_URL}:ecs"
        assert image["build"]["target"] == "runtime" and image["build"]["platform"] == "linux/amd64"
        assert plain(image["registry"])["username"] == "AWS"
        assert FAKE_TOKENS["ecr password"] in strings_inside_secrets(image["registry"])

        task = r.one(TASK).inputs
        assert (task["cpu"], task["memory"]) == ("1024", "2048")  # cpus 1, memoryMb 2048: a valid pair
        assert task["networkMode"] == "awsvpc" and task["requiresCompatibilities"] == ["FARGATE"]
        assert task["volumes"] == [{"name": "tmp"}]
        c = the_container(r)
        assert c["image"] == f"{REPO_URL}@{BUILT_DIGEST}"
        assert c["user"] == "10001" and c["readonlyRootFilesystem"] is True
        assert c["linuxParameters"]["capabilities"] == {"drop": ["ALL"]}
        assert c["mountPoints"] == [{"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}]
        assert c["portMappings"] == [{"containerPort": 8000, "protocol": "tcp"}]
        assert {e["name"]: e["value"] for e in c["environment"]} == {
            "PORT": "8000",
            "ENVIRONMENT": "production",
            "WEB_CONCURRENCY": "1",
            "RERANK_DEVICE": "cpu",
            "RERANK_MAX_LENGTH": "512",
            "LOG_LEVEL": "info",
            "RERANK_SHUTDOWN_GRACE_S": "30",
        }
        secret_arn = f"arn:aws:secretsmanager:us-east-1:{AWS_ACCOUNT}:reranker-ecs-secrets"
        assert {s["name"]: s["valueFrom"] for s in c["secrets"]} == {
            "RERANK_API_KEYS": f"{secret_arn}:RERANK_API_KEYS::",
            "SUPABASE_JWT_PUBLIC_KEY": f"{secret_arn}:SUPABASE_JWT_PUBLIC_KEY::",
        }
        health = c["healthCheck"]
        assert (
            health["command"][0] == "CMD-SHELL"
            and "http://127.0.0.1:8000/api/health/" in health["command"][1]
        )
        assert health["startPeriod"] == 120
        assert c["stopTimeout"] == 35  # shutdownGraceSeconds + 5
        assert c["logConfiguration"]["options"]["awslogs-group"] == "/ecs/reranker-ecs"

        (version,) = r.of_type(SECRET_VERSION)
        values = json.loads(strings_inside_secrets(version.inputs["secretString"])[0])
        assert values == {
            "RERANK_API_KEYS": FAKE_SECRETS["apiKeys"],
            "SUPABASE_JWT_PUBLIC_KEY": FAKE_SECRETS["supabaseJwtPublicKey"],
        }

        roles = {x.name: x.inputs for x in r.of_type(ROLE)}
        for role in roles.values():
            trust = json.loads(role["assumeRolePolicy"])["Statement"]
            assert trust == [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ]
            assert "managedPolicyArns" not in role  # nothing broader than the inline policy below
        (policy,) = r.of_type(ROLE_POLICY)
        statements = json.loads(plain(policy.inputs["policy"]))["Statement"]
        by_action = {json.dumps(st["Action"]): st["Resource"] for st in statements}
        assert by_action == {
            json.dumps(
                ["logs:CreateLogStream", "logs:PutLogEvents"]
            ): f"arn:aws:cloudwatch:us-east-1:{AWS_ACCOUNT}:reranker-ecs-logs:*",
            json.dumps("ecr:GetAuthorizationToken"): "*",
            json.dumps(
                ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
            ): f"arn:aws:ecr:us-east-1:{AWS_ACCOUNT}:reranker-ecs-repository",
            json.dumps("secretsmanager:GetSecretValue"): [secret_arn],
        }
        assert r.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") == []  # the task role: none

        balancer = r.one(LB).inputs
        assert balancer["internal"] is False and balancer["enableDeletionProtection"] is True
        assert balancer["subnets"] == ["subnet-0a", "subnet-0b", "subnet-0c"]  # the default VPC's
        group = r.one(TARGET_GROUP).inputs
        assert group["healthCheck"]["path"] == "/api/health/" and group["healthCheck"]["matcher"] == "200"
        assert (group["port"], group["targetType"], group["deregistrationDelay"]) == (8000, "ip", 35)
        (listener,) = r.of_type(LISTENER)
        assert (listener.inputs["port"], listener.inputs["protocol"]) == (80, "HTTP")
        groups = {x.name: x.inputs for x in r.of_type(SG)}
        tasks_in = groups["reranker-ecs-tasks"]["ingress"]
        assert tasks_in == [
            {
                "protocol": "tcp",
                "fromPort": 8000,
                "toPort": 8000,
                "securityGroups": ["reranker-ecs-lb-id"],
                "description": "the load balancer",
            }
        ]

        service = r.one(SERVICE).inputs
        assert service["launchType"] == "FARGATE" and service["desiredCount"] == 2
        assert service["healthCheckGracePeriodSeconds"] == 120
        assert service["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
        assert service["loadBalancers"][0]["containerPort"] == 8000
        scaling = r.one(SCALING_TARGET).inputs
        assert (scaling["minCapacity"], scaling["maxCapacity"]) == (2, 6)
        assert scaling["scalableDimension"] == "ecs:service:DesiredCount"
        tracking = r.one(SCALING_POLICY).inputs["targetTrackingScalingPolicyConfiguration"]
        assert tracking["targetValue"] == 60.0
        assert (
            tracking["predefinedMetricSpecification"]["predefinedMetricType"]
            == "ECSServiceAverageCPUUtilization"
        )

        assert_no_secret_in_clear(r)
        for token in FAKE_TOKENS.values():
            assert not any(
                token in x for res in r.mocks.created for x in harness.strings_outside_secrets(res.inputs)
            )
        assert outputs["url"] == "http://reranker-ecs-lb-1234567890.us-east-1.elb.amazonaws.com"
        assert (
            outputs["healthUrl"]
            == "http://reranker-ecs-lb-1234567890.us-east-1.elb.amazonaws.com/api/health/"
        )
        assert outputs["ecsMemoryMb"] == 2048 and outputs["ecsCpu"] == 1
        assert outputs["listPriceUsdPerMonthPerInstance"] == 36.04

    return r.settled(check)


@pulumi.runtime.test
def test_https_private_fixed_size_and_an_existing_vpc():
    r = run(
        {
            "ecsCertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/abc",
            "public": "false",
            "minInstances": "1",
            "maxInstances": "1",
            "targetCpuPercent": "",
            "ecsVpcId": "vpc-0abc",
            "ecsSubnetIds": '["subnet-1", "subnet-2"]',
            "memoryMb": "",
            "cpus": "",
        }
    )

    def check(outputs):
        listeners = {x.inputs["port"]: x.inputs for x in r.of_type(LISTENER)}
        assert listeners[443]["protocol"] == "HTTPS" and listeners[443]["certificateArn"].startswith(
            "arn:aws:acm"
        )
        assert listeners[80]["defaultActions"][0]["redirect"]["protocol"] == "HTTPS"
        assert r.one(LB).inputs["internal"] is True and r.one(LB).inputs["subnets"] == [
            "subnet-1",
            "subnet-2",
        ]
        assert r.of_type(SCALING_TARGET) == [] and r.of_type(SCALING_POLICY) == []
        assert r.one(SERVICE).inputs["desiredCount"] == 1
        # Derived from sizing: 1 worker -> 1 vCPU; 800 MB -> the smallest 1 vCPU task, 2048 MB.
        assert (r.one(TASK).inputs["cpu"], r.one(TASK).inputs["memory"]) == ("1024", "2048")
        assert outputs["url"].startswith("https://")

    return r.settled(check)


@pulumi.runtime.test
def test_a_pushed_private_image_is_pulled_with_credentials_from_secrets_manager():
    r = run(
        {
            "buildImage": "false",
            "imageName": "ghcr.io/acme/reranker@sha256:" + "ab" * 32,
            "registryUsername": "bot",
        },
        {"registryPassword": FAKE_SECRETS["registryPassword"]},
    )

    def check(_):
        assert r.of_type(REPOSITORY) == [] and r.of_type(IMAGE) == []
        c = the_container(r)
        assert c["image"] == "ghcr.io/acme/reranker@sha256:" + "ab" * 32
        assert c["repositoryCredentials"]["credentialsParameter"].endswith(
            ":reranker-ecs-registry-credentials"
        )
        statements = json.loads(plain(r.one(ROLE_POLICY).inputs["policy"]))["Statement"]
        assert not any("ecr:" in json.dumps(st["Action"]) for st in statements)
        assert_no_secret_in_clear(r)

    return r.settled(check)


CASES = {
    "no region": (
        {"awsRegion": ""},
        ["reranker:awsRegion is required for target=ecs (pulumi config set awsRegion"],
    ),
    "too little memory": (
        {"memoryMb": "512"},
        ["reranker:memoryMb=512 is too small for 1 worker x 650 MB + 150 MB headroom; set memoryMb >= 800"],
    ),
    "a CPU size Fargate does not have": (
        {"cpus": "3"},
        ["reranker:cpus=3 is not a Fargate CPU size (0.25, 0.5, 1, 2, 4, 8, 16); pulumi config set cpus 4"],
    ),
    "more memory than the CPU size takes": (
        {"cpus": "1", "memoryMb": "12288"},
        [
            "reranker:memoryMb=12288: Fargate gives 1 vCPU at most 8192 MB; the smallest task that holds it is "
            "2 vCPU / 12288 MB (pulumi config set cpus 2)"
        ],
    ),
    "scale to zero": ({"minInstances": "0"}, ["reranker:minInstances=0: an ECS service cannot start a task"]),
    "a concurrency ECS cannot enforce": (
        {"concurrency": "8"},
        [
            "reranker:concurrency cannot be honoured: an Application Load Balancer does not cap concurrent requests"
        ],
    ),
    "a shutdown grace past Fargate's stopTimeout": (
        {"shutdownGraceSeconds": "200"},
        [
            "reranker:shutdownGraceSeconds=200: Fargate waits at most 120 s",
            "pulumi config set shutdownGraceSeconds 115",
        ],
    ),
    "one subnet": (
        {"ecsVpcId": "vpc-1", "ecsSubnetIds": '["subnet-1"]'},
        ["reranker:ecsSubnetIds needs at least two subnets in different availability zones"],
    ),
    "a CPU target without room to scale": (
        {"minInstances": "2", "maxInstances": "2"},
        ["reranker:targetCpuPercent=60 has nothing to scale: maxInstances=2 is not above minInstances=2"],
    ),
    "a key of another target": (
        {"gcpRegion": "europe-west1"},
        ["reranker:gcpRegion is a setting of target cloudrun, but this stack's target is ecs"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pulumi.runtime.test
def test_settings_ecs_cannot_honour_are_refused(case):
    set_, expected = CASES[case]
    message = refused("ecs", set=set_, secrets={"apiKeys": FAKE_SECRETS["apiKeys"]})
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_fargate_sizes_are_the_valid_combinations_cheapest_first():
    prices = [s.usd_per_month for s in ecs.SIZES]
    assert prices == sorted(prices)
    pairs = {(int(s.cpus * 1024), s.memory_mb) for s in ecs.SIZES}
    assert (256, 512) in pairs and (256, 4096) not in pairs and (1024, 1024) not in pairs
    assert (4096, 30720) in pairs and (16384, 122880) in pairs
