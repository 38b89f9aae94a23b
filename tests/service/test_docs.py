"""/docs and /redoc work with no network: every asset comes from the service itself, and the page renders the
rerank routes in a real (headless) browser."""

from __future__ import annotations

import re

import pytest

from service.api.routes.docs import ASSETS_URL
from service.settings import load_settings
from tests.service.conftest import live_server
from tests.support.chromium import dump_dom

RERANK_ROUTES = ("/v1/rerank", "/v2/rerank", "/rerank")


def external_references(html: str) -> list[str]:
    """src/href values that point at another host (a CDN)."""
    return [url for url in re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html) if "//" in url]


def test_the_docs_page_loads_its_assets_from_the_service(bert_client):
    page = bert_client.get("/docs")
    assert page.status_code == 200
    assert external_references(page.text) == []
    assert "cdn.jsdelivr.net" not in page.text and "unpkg.com" not in page.text
    for asset, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css"),
                        ("favicon.png", "image/png")):
        url = f"{ASSETS_URL}/{asset}"
        assert url in page.text
        response = bert_client.get(url)
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert len(response.content) > 1000
    assert bert_client.get("/docs/oauth2-redirect").status_code == 200


def test_redoc_is_self_hosted_too(bert_client):
    page = bert_client.get("/redoc")
    assert page.status_code == 200
    assert external_references(page.text) == []  # no Google Fonts either
    assert f"{ASSETS_URL}/redoc.standalone.js" in page.text
    assert bert_client.get(f"{ASSETS_URL}/redoc.standalone.js").status_code == 200


def test_the_docs_stay_out_of_the_openapi_schema(bert_client):
    paths = bert_client.get("/openapi.json").json()["paths"]
    assert set(RERANK_ROUTES) <= set(paths)
    assert not any(path.startswith(("/docs", "/redoc", ASSETS_URL)) for path in paths)


@pytest.fixture(scope="module")
def server_url(bert_model_dir):
    with live_server(load_settings(RERANK_MODEL_PATH=str(bert_model_dir))) as url:
        yield url


def test_swagger_ui_renders_the_rerank_routes_in_headless_chromium(server_url):
    """This machine has no route to a CDN: with FastAPI's default page the DOM has no operations at all."""
    dom = dump_dom(f"{server_url}/docs")
    assert 'class="swagger-ui' in dom
    for route in RERANK_ROUTES:
        assert f'data-path="{route}"' in dom, f"{route} is not rendered"
