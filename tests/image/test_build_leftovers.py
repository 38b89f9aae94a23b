"""The image tests leave nothing untagged behind: every stage the classic builder keeps is tagged in the tests'
repository (so `remove_stale_tags` and the documented clean-up free it). A small three-stage Dockerfile on the
base image shows it in seconds; the production Dockerfile goes through the same `build_image`."""

from __future__ import annotations

import uuid

import pytest

from tests.image.conftest import IMAGE_REPOSITORY
from tests.image.engine import build_image, dangling_images, docker, dockerfile_stages, stage_tag

pytestmark = pytest.mark.image


def labelled_images(label: str) -> set[str]:
    listing = docker("image", "ls", "--all", "--quiet", "--no-trunc", "--filter", f"label={label}").stdout
    return set(listing.split())


def test_a_multi_stage_build_leaves_no_untagged_image(base_image, tmp_path):
    run = uuid.uuid4().hex[:12]
    label = f"io.reranker.test-build={run}"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"ARG BASE_IMAGE={base_image}\n"
        "FROM ${BASE_IMAGE} AS first\n"
        f"LABEL {label}\n"
        f"RUN echo {run} > /first\n"
        "FROM first AS second\n"
        "RUN cp /first /second\n"
        "FROM ${BASE_IMAGE} AS final\n"
        f"LABEL {label}\n"
        "COPY --from=second /second /second\n"
    )
    assert dockerfile_stages(context / "Dockerfile") == ["first", "second", "final"]
    tag = f"{IMAGE_REPOSITORY}:leftovers-{run}"
    try:
        first = build_image(context, tag, {}, tmp_path / "build.log")
        assert first.seconds is not None
        assert dangling_images(label) == set(), "a build stage was left behind untagged"
        listing = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPOSITORY).stdout
        tags = set(listing.split())
        assert {tag, stage_tag(tag, "first"), stage_tag(tag, "second")} <= tags
        assert build_image(context, tag, {}, tmp_path / "build.log").seconds is None  # reused, nothing built
    finally:
        for name in (tag, stage_tag(tag, "first"), stage_tag(tag, "second")):
            docker("image", "rm", name, check=False)
    # What docs/IMAGE.md says to run frees everything: nothing of this build is left, tagged or not.
    assert labelled_images(label) == set()
