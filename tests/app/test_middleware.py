"""Request metrics by route template: the docs, the schema, the page, a 413 answered before routing and a 405
count under their own routes; only a path of no route is 'unmatched' (bounded label values)."""

from __future__ import annotations

import pytest

from tests.app.conftest import metric_value, serve

pytestmark = pytest.mark.anyio


def requests_of(metrics: str, method: str, route: str, status: int) -> float:
    labels = f'method="{method}",route="{route}",status="{status}"'
    return metric_value(metrics, "llmrec_http_requests_total", labels)


async def test_every_served_path_is_counted_under_its_route(make_settings) -> None:
    async with serve(make_settings(max_body_bytes=1024)) as client:
        for path in ("/docs", "/openapi.json", "/", "/static/page.js", "/static/page.css"):
            assert (await client.get(path)).status_code == 200, path
        too_big = await client.post(
            "/v1/recommend", content=b"[" + b"1," * 1000 + b"1]", headers={"content-type": "application/json"}
        )
        wrong_method = await client.delete("/v1/recommend")
        nowhere = await client.get("/v1/nowhere")
        metrics = (await client.get("/metrics")).text
    assert (too_big.status_code, wrong_method.status_code, nowhere.status_code) == (413, 405, 404)
    assert requests_of(metrics, "GET", "/docs", 200) == 1.0
    assert requests_of(metrics, "GET", "/openapi.json", 200) == 1.0
    assert requests_of(metrics, "GET", "/", 200) == 1.0
    assert requests_of(metrics, "GET", "/static/{name}", 200) == 2.0
    assert requests_of(metrics, "POST", "/v1/recommend", 413) == 1.0
    assert requests_of(metrics, "DELETE", "/v1/recommend", 405) == 1.0
    assert requests_of(metrics, "GET", "unmatched", 404) == 1.0
    counts = [line for line in metrics.splitlines() if line.startswith("llmrec_http_requests_total{")]
    assert [line for line in counts if 'route="unmatched"' in line] == [
        'llmrec_http_requests_total{method="GET",route="unmatched",status="404"} 1.0'
    ]
