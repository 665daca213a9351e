"""API keys, body and history limits, and every client error path: a 4xx in the one error envelope."""

from __future__ import annotations

import pytest

from tests.app.conftest import assert_envelope, serve

pytestmark = pytest.mark.anyio
KEY = "s3cret-key-one"
V1_CALLS = [
    ("POST", "/v1/recommend", {"history": [1, 2]}),
    ("POST", "/v1/users/u1/events", {"events": [{"item_id": 1, "timestamp": 5}]}),
    ("GET", "/v1/users/u1/history", None),
    ("GET", "/v1/items/1", None),
]


async def test_api_keys_guard_every_v1_route(make_settings) -> None:
    async with serve(make_settings(api_keys=[KEY, "another-key-2"])) as client:
        for method, path, body in V1_CALLS:
            missing = await client.request(method, path, json=body)
            assert_envelope(missing, 401, "unauthorized")
            assert missing.json()["error"]["message"] == "missing X-API-Key header"
            wrong = await client.request(method, path, json=body, headers={"X-API-Key": KEY + "x"})
            assert assert_envelope(wrong, 401)["message"] == "invalid API key"
            ok = await client.request(method, path, json=body, headers={"X-API-Key": KEY})
            assert ok.status_code == 200, (path, ok.text)
        bad_body = await client.post("/v1/recommend", json={"k": "ten"})
        assert_envelope(bad_body, 401)  # authentication comes before validation: nothing leaks
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200  # metrics_public defaults to true


async def test_private_metrics_need_a_key(make_settings) -> None:
    async with serve(make_settings(api_keys=[KEY], metrics_public=False)) as client:
        assert_envelope(await client.get("/metrics"), 401, "unauthorized")
        response = await client.get("/metrics", headers={"X-API-Key": KEY})
        assert response.status_code == 200 and "llmrec_http_requests_total" in response.text
        assert (await client.get("/healthz")).status_code == 200


async def test_body_limit_is_a_413_declared_or_streamed(make_settings) -> None:
    big = b'{"history": [' + b"1, " * 600 + b"1]}"
    async with serve(make_settings(max_body_bytes=1024)) as client:
        declared = await client.post(
            "/v1/recommend", content=big, headers={"content-type": "application/json"}
        )

        async def chunks():
            for start in range(0, len(big), 100):
                yield big[start : start + 100]

        streamed = await client.post(
            "/v1/recommend", content=chunks(), headers={"content-type": "application/json"}
        )
        small = await client.post("/v1/recommend", json={"history": [1, 2, 3]})
    assert "1024 bytes" in assert_envelope(declared, 413, "payload_too_large")["message"]
    assert_envelope(streamed, 413, "payload_too_large")
    assert small.status_code == 200


async def test_history_length_limit_is_a_clear_422(make_settings) -> None:
    async with serve(make_settings(max_history=5)) as client:
        response = await client.post("/v1/recommend", json={"history": [1, 2, 3, 4, 5, 6]})
        at_limit = await client.post("/v1/recommend", json={"history": [1, 2, 3, 4, 5]})
    message = assert_envelope(response, 422, "invalid_request")["message"]
    assert message == "history has 6 events; the limit is 5 (max_history)"
    assert at_limit.status_code == 200


ERROR_CASES = [
    ("POST", "/v1/recommend", b"{not json", 422, "validation_error", "invalid JSON at character 1"),
    ("POST", "/v1/recommend", b"[1, 2]", 422, "validation_error", "body"),
    ("POST", "/v1/recommend", b'{"history": [1], "k": 0}', 422, "validation_error", "body.k"),
    ("POST", "/v1/recommend", b'{"history": [1], "k": 101}', 422, "validation_error", "body.k"),
    ("POST", "/v1/recommend", b'{"history": [1], "k": "5"}', 422, "validation_error", "body.k"),
    ("POST", "/v1/recommend", b'{"history": [1], "k": 5.5}', 422, "validation_error", "body.k"),
    ("POST", "/v1/recommend", b'{"history": [1], "k": true}', 422, "validation_error", "body.k"),
    ("POST", "/v1/recommend", b'{"history": [1], "colour": "red"}', 422, "validation_error", "colour"),
    ("POST", "/v1/recommend", b'{"history": [0]}', 422, "validation_error", "history"),
    ("POST", "/v1/recommend", b'{"user_id": "\xff"}', 400, "bad_request", "UTF-8 JSON body"),  # not UTF-8
    ("POST", "/v1/recommend", b'{"history": [NaN]}', 422, "validation_error", "history"),
    (
        "POST",
        "/v1/recommend",
        b'{"history": [{"item_id": 1, "timestamp": Infinity}]}',
        422,
        "validation_error",
        "timestamp",
    ),
    (
        "POST",
        "/v1/recommend",
        b'{"history": [1], "exclude_seen": "no"}',
        422,
        "validation_error",
        "exclude_seen",
    ),
    ("POST", "/v1/recommend", b'{"history": [1], "model": "gpt"}', 422, "validation_error", "model"),
    ("POST", "/v1/recommend", b'{"user_id": "a b"}', 422, "validation_error", "user_id"),
    ("POST", "/v1/recommend", b"{}", 422, "validation_error", "user_id"),
    (
        "POST",
        "/v1/recommend",
        b'{"history": [1], "filters": {"genres": ["Nope"]}}',
        422,
        "invalid_request",
        "Nope",
    ),
    (
        "POST",
        "/v1/users/a%20b/events",
        b'{"events": [{"item_id": 1, "timestamp": 1}]}',
        422,
        "validation_error",
        "user_id",
    ),
    ("POST", "/v1/users/u/events", b'{"events": [{"item_id": 1}]}', 422, "validation_error", "timestamp"),
    (
        "POST",
        "/v1/users/u/events",
        b'{"events": [{"item_id": 1, "timestamp": -1}]}',
        422,
        "validation_error",
        "timestamp",
    ),
    ("GET", "/v1/users/" + "x" * 129 + "/history", None, 422, "validation_error", "user_id"),
    ("GET", "/v1/items/0", None, 422, "validation_error", "item_id"),
    ("GET", "/v1/items/abc", None, 422, "validation_error", "item_id"),
    ("GET", "/v1/items/61", None, 404, "not_found", "item 61"),
    ("GET", "/v1/nothing", None, 404, "not_found", "Not Found"),
    ("DELETE", "/v1/recommend", None, 405, "method_not_allowed", "Method Not Allowed"),
]


async def test_every_error_path_uses_the_envelope(make_settings) -> None:
    async with serve(make_settings()) as client:
        for method, path, content, status, type_, needle in ERROR_CASES:
            headers = {"content-type": "application/json"} if content is not None else {}
            response = await client.request(method, path, content=content, headers=headers)
            error = assert_envelope(response, status, type_)
            assert needle in error["message"], (path, content, error)


HISTORY_ITEM = (
    "a history item is an item id (an integer from 1 to 2147483647) "
    'or an object {"item_id": <item id>, "timestamp": <unix seconds, optional>}'
)


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ("0", "got 0"),
        ('"abc"', 'got "abc"'),
        ("1.5", "got 1.5"),
        ("null", "got null"),
        ('{"item_id": 0}', "item_id: Input should be greater than or equal to 1"),
        ('{"item_id": 1, "when": 2}', "when: Extra inputs are not permitted"),
        ("{}", "item_id: Field required"),
    ],
)
async def test_a_bad_history_item_is_told_what_an_item_may_be(make_settings, item: str, problem: str) -> None:
    async with serve(make_settings()) as client:
        for path in ("/v1/recommend", "/v1/explain/genre"):
            response = await client.post(
                path, content=f'{{"history": [3, {item}]}}', headers={"content-type": "application/json"}
            )
            message = assert_envelope(response, 422, "validation_error")["message"]
            assert message == f"body.history.1: {HISTORY_ITEM}; {problem}", message


async def test_a_body_that_is_not_sent_as_json_gets_a_415_saying_so(make_settings) -> None:
    body = b'{"history": [1, 2]}'
    wanted = "the body must be JSON, sent with the header content-type: application/json"
    async with serve(make_settings(api_keys=[KEY])) as client:
        key = {"X-API-Key": KEY}
        form_type = {"content-type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
        form = await client.post("/v1/recommend", content=body, headers={**key, **form_type})
        bare = await client.post("/v1/users/u1/events", content=body, headers=key)
        plain = {"content-type": "text/plain"}
        text = await client.post("/v1/explain/genre", content=body, headers={**key, **plain})
        unauthenticated = await client.post("/v1/recommend", content=body, headers=plain)
        with_charset = await client.post(
            "/v1/recommend", content=body, headers={**key, "content-type": "application/json; charset=utf-8"}
        )
    message = assert_envelope(form, 415, "unsupported_media_type")["message"]
    assert message == f"{wanted} (got content-type: application/x-www-form-urlencoded)"
    assert assert_envelope(bare, 415)["message"] == f"{wanted} (no content-type was sent)"
    assert assert_envelope(text, 415)["message"] == f"{wanted} (got content-type: text/plain)"
    assert_envelope(unauthenticated, 401)  # the key is checked first: nothing about the route leaks
    assert with_charset.status_code == 200, with_charset.text
