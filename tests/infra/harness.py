"""Run the real Pulumi program against Pulumi's mocks, with a stack's real Pulumi.<stack>.yaml.

The stack file is read here independently of infra/config.py (plain YAML, converted the way the
Pulumi engine hands config to a program), `secure:` values become fake values marked secret, and the
program is `infra.program.run()`, exactly what `infra/__main__.py` calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc

ROOT = Path(__file__).resolve().parents[2]
PROJECT = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["name"]

# What CI's `deploy` job sets on the prod stack before `pulumi up` (see .github/workflows/deploy.yml).
PROD_DIGEST = "sha256:" + "ab" * 32
PROD_CI_SETTINGS = {
    "imageName": f"ghcr.io/acme/reranker@{PROD_DIGEST}",
    "buildImage": "false",
    "renderOwnerId": "tea-cmockowner000000000",
}
FAKE_SECRETS = {
    "llmApiKey": "fake-llm-key-3c1d0b",
    "supabaseAnonKey": "fake-anon-key-77aa10",
    "supabaseServiceRoleKey": "fake-service-role-9e8f7a",
    "supabaseJwtSecret": "fake-jwt-secret-5b4c3d",
    "registryPassword": "fake-registry-token-1234",
    "apiKeys": "fake-api-key-one-6f1e,fake-api-key-two-0a9b",
    "supabaseJwtPublicKey": "fake-jwt-public-key-2d7c",
}
# Credentials the cloud providers hand the program (invoke results): secret wherever they are used.
FAKE_TOKENS = {
    "gcp access token": "fake-gcp-access-token-8a7b",
    "ecr password": "fake-ecr-password-4c3d",
}
BUILT_DIGEST = "sha256:" + "cd" * 32
MOCK_SUFFIX = "m0ck1d"  # the random suffix of a mocked auto-named Kubernetes object
MOCK_LOAD_BALANCER_IP = "203.0.113.7"
PULLED_ID = "sha256:" + "ef" * 32
EXAMPLES = ROOT / "infra" / "examples"
AWS_ACCOUNT = "123456789012"


def stack_path(stack: str) -> Path:
    """Pulumi.<stack>.yaml at the root (the real stacks), else the example of that name."""
    path = ROOT / f"Pulumi.{stack}.yaml"
    return path if path.exists() else EXAMPLES / f"Pulumi.{stack}.yaml"


def example_file(target: str) -> Path:
    """infra/examples/Pulumi.<target>.yaml: what a user copies to Pulumi.<stack>.yaml."""
    return EXAMPLES / f"Pulumi.{target}.yaml"


def stack_values(stack: str, path: Path | None = None) -> tuple[dict[str, str], set[str]]:
    """The `reranker:*` values of Pulumi.<stack>.yaml (or `path`) as the engine passes them, and the
    secret keys."""
    document = yaml.safe_load((path or stack_path(stack)).read_text())
    values: dict[str, str] = {}
    secrets: set[str] = set()
    for full_key, value in document["config"].items():
        namespace, key = full_key.split(":", 1)
        assert namespace == PROJECT, f"{full_key} is outside the project namespace {PROJECT}"
        if isinstance(value, dict) and "secure" in value:
            values[key] = f"fake-decrypted-{key}"
            secrets.add(key)
        elif isinstance(value, bool):
            values[key] = str(value).lower()
        elif isinstance(value, (list, dict)):
            values[key] = json.dumps(value)
        else:
            values[key] = str(value)
    return values, secrets


class Mocks(pulumi.runtime.Mocks):
    """Records every resource the program declares and answers with plausible outputs."""

    def __init__(self) -> None:
        self.created: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        self.created.append(args)
        outputs = dict(args.inputs)
        if args.typ == "docker:index/image:Image":
            name = _plain(args.inputs["imageName"])
            outputs["repoDigest"] = (
                BUILT_DIGEST if args.inputs.get("skipPush") else f"{name.split(':')[0]}@{BUILT_DIGEST}"
            )
        elif args.typ == "docker:index/remoteImage:RemoteImage":
            outputs["imageId"] = PULLED_ID
            outputs["repoDigest"] = f"ghcr.io/acme/reranker@{PROD_DIGEST}"
        elif args.typ == "render:services:WebService":
            name = _plain(args.inputs["name"])
            outputs["serviceDetails"] = {
                **_plain(args.inputs["serviceDetails"]),
                "url": f"https://{name}.onrender.com",
            }
            outputs["dashboardUrl"] = f"https://dashboard.render.com/web/srv-{name}"
        elif args.typ == "digitalocean:index/app:App":
            name = _plain(args.inputs["spec"])["name"]
            outputs["defaultIngress"] = f"{name}-mock1.ondigitalocean.app"
            outputs["liveUrl"] = f"https://{name}-mock1.ondigitalocean.app"
        elif args.typ.startswith("kubernetes:") and not args.typ.startswith("pulumi:"):
            # pulumi-kubernetes auto-names an object without metadata.name: <resource name>-<random suffix>.
            metadata = dict(_plain(args.inputs.get("metadata") or {}))
            metadata.setdefault("name", f"{args.name}-{MOCK_SUFFIX}")
            outputs["metadata"] = metadata
            if args.typ == "kubernetes:core/v1:Service" and _plain(args.inputs["spec"]).get("type") == "LoadBalancer":
                outputs["status"] = {"loadBalancer": {"ingress": [{"ip": MOCK_LOAD_BALANCER_IP}]}}
        elif args.typ == "gcp:cloudrunv2/service:Service":
            outputs["uri"] = f"https://{_plain(args.inputs['name'])}-x7k2q9-uc.a.run.app"
        elif args.typ == "gcp:serviceaccount/account:Account":
            inputs = _plain(args.inputs)
            outputs["email"] = f"{inputs['accountId']}@{inputs['project']}.iam.gserviceaccount.com"
        elif args.typ == "gcp:secretmanager/secretVersion:SecretVersion":
            outputs["version"] = "1"
        elif args.typ == "aws:ecr/repository:Repository":
            outputs["repositoryUrl"] = (
                f"{AWS_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{_plain(args.inputs['name'])}"
            )
            outputs["registryId"] = AWS_ACCOUNT
        elif args.typ == "aws:lb/loadBalancer:LoadBalancer":
            outputs["dnsName"] = f"{args.name}-1234567890.us-east-1.elb.amazonaws.com"
        if args.typ.startswith("aws:") and "arn" not in outputs:
            service = args.typ.split(":")[1].split("/")[0]
            outputs["arn"] = f"arn:aws:{service}:us-east-1:{AWS_ACCOUNT}:{args.name}"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list | None]:
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"accessToken": FAKE_TOKENS["gcp access token"], "project": "mock-project"}, []
        if args.token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {
                "userName": "AWS",
                "password": FAKE_TOKENS["ecr password"],
                "proxyEndpoint": f"https://{AWS_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com",
            }, []
        if args.token == "aws:ec2/getVpc:getVpc":
            return {"id": "vpc-0default", "cidrBlock": "172.31.0.0/16"}, []
        if args.token == "aws:ec2/getSubnets:getSubnets":
            return {"ids": ["subnet-0a", "subnet-0b", "subnet-0c"]}, []
        return {}, []


@dataclass
class Run:
    """One program run: its stack outputs and the resources it declared."""

    outputs: dict[str, Any]
    mocks: Mocks
    extra: dict[str, Any] = field(default_factory=dict)

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.mocks.created if r.typ == typ]

    def one(self, typ: str) -> pulumi.runtime.MockResourceArgs:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, got {[r.name for r in found]} of {self.types()}"
        return found[0]

    def types(self) -> list[str]:
        return sorted(r.typ for r in self.mocks.created)

    def settled(self, check) -> pulumi.Output:
        """Run `check(outputs)` once every output (hence every resource) has resolved."""
        names = list(self.outputs)
        return pulumi.Output.all(*[self.outputs[n] for n in names]).apply(
            lambda values: check(dict(zip(names, values, strict=True)))
        )


def configure(
    stack: str,
    *,
    set: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    remove: tuple[str, ...] = (),
    preview: bool = False,
    stack_file: Path | None = None,
) -> Mocks:
    """Point the Pulumi runtime at mocks and at the stack's real settings plus overrides."""
    values, secret_keys = stack_values(stack, stack_file)
    for key in remove:
        values.pop(key, None)
        secret_keys.discard(key)
    values.update(set or {})
    for key, value in (secrets or {}).items():
        values[key] = value
        secret_keys.add(key)
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview)
    pulumi.runtime.set_all_config(
        {f"{PROJECT}:{k}": v for k, v in values.items()},
        secret_keys=[f"{PROJECT}:{k}" for k in secret_keys],
    )
    return mocks


def run_stack(stack: str, **overrides: Any) -> Run:
    from infra import program

    mocks = configure(stack, **overrides)
    return Run(program.run(), mocks)


def run_example(target: str, **overrides: Any) -> Run:
    """The program on infra/examples/Pulumi.<target>.yaml (as stack `<target>`), plus overrides."""
    return run_stack(target, stack_file=example_file(target), **overrides)


def configure_example(target: str, **overrides: Any) -> Mocks:
    return configure(target, stack_file=example_file(target), **overrides)


def declared(target: str, **overrides: Any) -> Run:
    """run_example(), settled outside a test function: the Run, every resource resolved (for tests that
    need the declared objects as plain data, e.g. to run them on Docker)."""
    captured: dict[str, Run] = {}

    @pulumi.runtime.test
    def settle():
        run = run_example(target, **overrides)
        captured["run"] = run
        return run.settled(lambda outputs: run.extra.update(outputs=outputs))

    settle()
    return captured["run"]


def refusal(target: str, **overrides: Any) -> str:
    """The ConfigError message the program raises for the example stack plus overrides (AssertionError
    if it deploys, or declares anything first)."""
    from infra import program
    from infra.config import ConfigError

    mocks = configure_example(target, **overrides)
    try:
        program.run()
    except ConfigError as error:
        assert mocks.created == [], "resources were declared before the configuration was validated"
        return str(error)
    raise AssertionError(f"{target} with {overrides} was accepted")


def prod_overrides(**extra_set: str) -> dict[str, Any]:
    """The prod stack as CI deploys it: CI settings plus the four required secrets."""
    secrets = {
        k: FAKE_SECRETS[k]
        for k in ("llmApiKey", "supabaseAnonKey", "supabaseServiceRoleKey", "supabaseJwtSecret")
    }
    return {"set": {**PROD_CI_SETTINGS, **extra_set}, "secrets": secrets}


# ---- looking inside mock inputs ----------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """The value with Pulumi's secret wrappers removed (recursively)."""
    if rpc.is_rpc_secret(value):
        return _plain(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


plain = _plain


def strings_outside_secrets(value: Any) -> list[str]:
    """Every string in an input tree that is NOT under a secret marker (what a state file shows)."""
    if rpc.is_rpc_secret(value):
        return []
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings_outside_secrets(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings_outside_secrets(v)]
    return [value] if isinstance(value, str) else []


def strings_inside_secrets(value: Any, inside: bool = False) -> list[str]:
    if rpc.is_rpc_secret(value):
        return strings_inside_secrets(rpc.unwrap_rpc_secret(value), True)
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_inside_secrets(v, inside)]
    if isinstance(value, list):
        return [s for v in value for s in strings_inside_secrets(v, inside)]
    return [value] if inside and isinstance(value, str) else []


def changed(overrides: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`overrides` (set/secrets for run_stack) with `set` changes; a change to None removes that key."""
    return {
        "set": {**overrides.get("set", {}), **{k: v for k, v in changes.items() if v is not None}},
        "secrets": dict(overrides.get("secrets", {})),
        "remove": tuple(k for k, v in changes.items() if v is None),
    }


def check_generator_script(script: Path, generate, tmp_path: Path, name: str) -> None:
    """A config-as-code generator script: `--check` fails on a stale file, a run rewrites it with what
    generate() gives, and `--check` then passes."""
    import subprocess
    import sys

    target = tmp_path / name
    command = [sys.executable, str(script), "--output", str(target)]
    stale = subprocess.run([*command, "--check"], capture_output=True, text=True, check=False)
    assert stale.returncode == 1 and "out of date" in stale.stderr, stale.stderr
    subprocess.run(command, capture_output=True, check=True)
    assert target.read_text() == generate()
    fresh = subprocess.run([*command, "--check"], capture_output=True, text=True, check=False)
    assert fresh.returncode == 0, fresh.stderr
