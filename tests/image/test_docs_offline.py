"""/docs of the production image with no network at all (`--network none`): headless Chromium, run in the
container's network namespace (a `--network none` container publishes no port), renders the rerank routes.
With FastAPI's default page, whose Swagger UI comes from a CDN, the page stays blank."""

from __future__ import annotations

import shutil

import pytest

from tests.image.engine import Container
from tests.support.chromium import chromium_binary, dump_dom

pytestmark = pytest.mark.image

RERANK_ROUTES = ("/v1/rerank", "/v2/rerank", "/rerank")


@pytest.fixture(scope="module")
def offline_bert(build_test_image):
    container = Container.run(build_test_image("bert"), "--network", "none")
    try:
        container.wait_healthy(timeout=60)
        yield container
    finally:
        container.remove()


def test_docs_render_the_rerank_routes_with_the_network_off(offline_bert):
    chromium_binary()  # skip/fail early with the reason when there is no browser
    if shutil.which("nsenter") is None:
        pytest.fail("nsenter (util-linux) is needed to reach a --network none container")
    state = offline_bert.inspect()
    assert state["HostConfig"]["NetworkMode"] == "none"
    pid = state["State"]["Pid"]
    dom = dump_dom("http://127.0.0.1:8000/docs", prefix=["nsenter", "-t", str(pid), "-n"])
    assert 'class="swagger-ui' in dom
    for route in RERANK_ROUTES:
        assert f'data-path="{route}"' in dom, f"{route} is not rendered in /docs:\n{dom[:2000]}"
