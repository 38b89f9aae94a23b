"""infra/targets/_image.py against Pulumi's mocks: what every target that publishes an image gets from it.

A stack that builds declares one docker.Image from the flavour's Dockerfile stage and pushes it (the platform
then runs the pushed digest, so every build is a new deploy); a stack that deploys a pushed reference declares
no image and runs that reference as it is; a registry login from the stack's settings travels as a secret."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pulumi
import pulumi_docker as docker
import pytest

from infra.config import Secret
from infra.spec import ImageSpec
from infra.targets import _image
from tests.infra import harness
from tests.infra.harness import (
    BUILT_DIGEST,
    PROD_DIGEST,
    plain,
    strings_inside_secrets,
    strings_outside_secrets,
)

IMAGE = "docker:index/image:Image"
PASSWORD = "fake-registry-token-5e6f"
SPEC = ImageSpec(
    name="ghcr.io/acme/reranker:dev",
    build=True,
    context=Path("/repo"),
    dockerfile=Path("/repo/Dockerfile"),
    build_args={"MODEL_ID": "jinaai/jina-reranker-v1-tiny-en"},
    target="runtime",
    platform="linux/amd64",
    push=True,
    registry_server="ghcr.io",
    registry_username="acme-bot",
    registry_password=Secret(PASSWORD),
)


@pytest.fixture
def mocks() -> harness.Mocks:
    mocks = harness.Mocks()
    pulumi.runtime.set_mocks(mocks, project=harness.PROJECT, stack="image-test", preview=False)
    return mocks


def _parent() -> pulumi.ComponentResource:
    return pulumi.ComponentResource("reranker:test:Parent", "parent")


def _resolved(published: _image.Published) -> pulumi.Output:
    return pulumi.Output.all(pulumi.Output.from_input(published.ref), published.name, published.digest)


@pulumi.runtime.test
def test_a_stack_that_builds_declares_the_flavours_build_and_runs_the_pushed_digest(mocks):
    published = _image.publish("svc", SPEC, _parent())

    def check(values):
        ref, name, digest = values
        (image,) = [r for r in mocks.created if r.typ == IMAGE]
        inputs = plain(image.inputs)
        assert image.name == "svc-image"
        assert inputs["imageName"] == SPEC.name
        assert inputs["skipPush"] is False
        assert inputs["build"] == {
            "context": "/repo", "dockerfile": "/repo/Dockerfile", "target": "runtime",
            "platform": "linux/amd64", "args": {"MODEL_ID": "jinaai/jina-reranker-v1-tiny-en"},
        }
        assert inputs["registry"] == {"server": "ghcr.io", "username": "acme-bot", "password": PASSWORD}
        # The password is a secret in the state, never in clear.
        assert PASSWORD in strings_inside_secrets(image.inputs)
        assert PASSWORD not in strings_outside_secrets(image.inputs)
        assert ref == digest == f"ghcr.io/acme/reranker@{BUILT_DIGEST}"
        assert name == SPEC.name
        assert isinstance(published.image, docker.Image)

    return _resolved(published).apply(check)


@pulumi.runtime.test
def test_a_target_can_push_elsewhere_with_its_own_login(mocks):
    """ECS and Cloud Run push to the registry they create, with the credential the cloud hands out."""
    ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    registry = docker.RegistryArgs(server=ecr, username="AWS",
                                   password=pulumi.Output.secret("fake-ecr-password-1a2b"))
    published = _image.publish("svc", SPEC, _parent(), image_name=f"{ecr}/r:1", registry=registry)

    def check(values):
        ref, name, _ = values
        (image,) = [r for r in mocks.created if r.typ == IMAGE]
        inputs = plain(image.inputs)
        assert inputs["imageName"] == name == f"{ecr}/r:1"
        assert inputs["registry"]["username"] == "AWS"
        assert "acme-bot" not in strings_outside_secrets(image.inputs)
        assert ref == f"{ecr}/r@{BUILT_DIGEST}"

    return _resolved(published).apply(check)


@pulumi.runtime.test
def test_a_stack_that_deploys_a_pushed_digest_declares_no_build(mocks):
    pinned = f"ghcr.io/acme/reranker@{PROD_DIGEST}"
    published = _image.publish("svc", replace(SPEC, name=pinned, build=False), _parent())

    def check(values):
        assert values == [pinned, pinned, PROD_DIGEST]
        assert [r.typ for r in mocks.created if r.typ == IMAGE] == []
        assert published.image is None

    return _resolved(published).apply(check)


@pulumi.runtime.test
def test_a_pushed_tag_runs_as_it_is_with_no_digest_to_report(mocks):
    published = _image.publish("svc", replace(SPEC, name="ghcr.io/acme/reranker:v2", build=False), _parent())

    def check(values):
        assert values == ["ghcr.io/acme/reranker:v2", "ghcr.io/acme/reranker:v2", ""]
        assert [r.typ for r in mocks.created if r.typ == IMAGE] == []

    return _resolved(published).apply(check)


@pytest.mark.parametrize("username, password", [("acme-bot", None), (None, Secret(PASSWORD)), (None, None)])
def test_no_login_is_sent_unless_both_user_and_password_are_set(username, password):
    spec = replace(SPEC, registry_username=username, registry_password=password)
    assert _image.user_registry(spec) is None


def test_the_build_args_name_the_flavours_stage_and_leave_out_empty_arguments():
    args = _image.build_args(replace(SPEC, build_args={}, target="runtime-onnx", platform=None))
    assert args.target == "runtime-onnx"
    assert args.args is None  # pulumi-docker would otherwise send an empty map
    assert args.platform is None
    assert args.context == "/repo" and args.dockerfile == "/repo/Dockerfile"
