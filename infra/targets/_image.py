"""Shared by the targets: build the image flavour from the Dockerfile and push it, or take a pushed one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker

from infra.spec import ImageSpec


@dataclass
class Published:
    """The image a platform runs: `ref` is what its service definition takes (repo@sha256:... after a
    push, so every build is a new deploy), `name` and `digest` are the stack outputs."""

    ref: Any
    name: Any
    digest: Any
    image: docker.Image | None = None


def build_args(image: ImageSpec) -> docker.DockerBuildArgs:
    return docker.DockerBuildArgs(
        context=str(image.context),
        dockerfile=str(image.dockerfile),
        args=dict(image.build_args) or None,
        target=image.target,
        platform=image.platform,
    )


def user_registry(image: ImageSpec) -> docker.RegistryArgs | None:
    """The registry credential the stack's registry* settings give, if any."""
    if image.registry_username and image.registry_password:
        return docker.RegistryArgs(
            server=image.registry_server,
            username=image.registry_username,
            password=image.registry_password.as_output(),
        )
    return None


def publish(
    name: str,
    image: ImageSpec,
    parent: pulumi.Resource,
    *,
    image_name: Any = None,
    registry: docker.RegistryArgs | None = None,
    depends_on: list[pulumi.Resource] | None = None,
) -> Published:
    """Build and push `image` (to `image_name`, default the stack's imageName) when the stack builds;
    otherwise the pushed reference in imageName is run as is."""
    if not image.build:
        return Published(
            ref=image.name,
            name=pulumi.Output.from_input(image.name),
            digest=pulumi.Output.from_input(image.digest or ""),
        )
    built = docker.Image(
        f"{name}-image",
        image_name=image_name if image_name is not None else image.name,
        build=build_args(image),
        skip_push=False,
        registry=registry if registry is not None else user_registry(image),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=depends_on),
    )
    return Published(ref=built.repo_digest, name=built.image_name, digest=built.repo_digest, image=built)
