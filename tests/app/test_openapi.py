"""The OpenAPI document is the truth. Schemathesis, in process over ASGI, sends schema-valid and
schema-invalid requests to every operation of the real app (tiny bundles, real Redis, API keys on) and runs
every check: no 5xx, statuses, content types and bodies as documented, valid data accepted, invalid data
rejected, auth enforced. Then what a fuzzer does not look for: the schema carries this instance's limits,
models, genres and auth, and behaviour agrees with it at the edges (integral floats, the longest history, one
past it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
import schemathesis.engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.python import asgi

from app.main import create_app
from app.openapi import find_branch
from app.schemas import MAX_FILTER_IDS, MAX_ITEM_ID
from app.settings import Settings
from tests.app.conftest import REDIS_URL, assert_envelope, serve
from training.tiny_bundle import GENRES

pytestmark = pytest.mark.anyio
KEY = "contract-key-1"
MAX_HISTORY = 40
MAX_EXAMPLES = 15  # per operation and generation mode: the suite stays fast; `schemathesis run` goes deeper
# No exception to Schemathesis' default expectations is needed. The one candidate: 413 for a schema-valid body
# over max_body_bytes (a byte limit has no JSON Schema keyword; the schema states it in every requestBody, as
# its description and `x-max-body-bytes`, and documents 413). With this instance's limits no schema-valid body
# reaches it (the last test checks the defaults), so a 413 here would fail `positive_data_acceptance`.
CHECKS: dict[str, Any] = {}


def run_schemathesis(schema: Any) -> tuple[dict[str, int], list[str]]:
    """Every phase `schemathesis run` has (examples, coverage, fuzzing, stateful), as its engine runs them:
    (scenarios by phase and status, one line per failure or error). Not the pytest plugin: its
    `@schema.parametrize` reads `node._nodeid`, which pytest 9 no longer has."""
    tally: dict[str, int] = {}
    problems: list[str] = []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            key = f"{event.phase.value}:{event.status.value}"
            tally[key] = tally.get(key, 0) + 1
            for checks in event.recorder.checks.values():
                for c in checks:
                    if c.status == Status.FAILURE and c.failure_info is not None:
                        failure = c.failure_info.failure
                        problems.append(
                            f"{event.label} [{c.name}] {failure.title}: {failure.message}\n"
                            f"    {c.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            problems.append(f"{event.label}: error {event.value!r}")
        elif isinstance(event, events.FatalError):
            problems.append(f"fatal: {event.exception!r}")
    return tally, problems


# the tiny bundle (SASRec, LLM-SRec), and with both A-LLMRec parts (re-ranking bounds k; the genre prompt)
@pytest.mark.parametrize("bundle", ["tiny_bundle", "allmrec_bundle"])
def test_every_operation_keeps_the_schema(
    bundle: str, request: pytest.FixtureRequest, redis_run_prefix: str
) -> None:
    app = create_app(
        Settings.from_flat(
            bundle=request.getfixturevalue(bundle),
            device="cpu",
            redis_url=REDIS_URL,
            redis_prefix=f"{redis_run_prefix}:contract-{bundle}",
            api_keys=[KEY],
            max_history=MAX_HISTORY,
            retrieval_top_n=10,
            batch_window_ms=2.0,
        )
    )
    config = SchemathesisConfig.from_dict(
        {
            "headers": {"X-API-Key": KEY},
            "checks": CHECKS,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
        }
    )
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)  # starts the lifespan
        tally, problems = run_schemathesis(schema)
    finally:
        asgi.shutdown_lifespans()  # closes the batcher, the backend and the Redis pool
    assert not problems, "\n".join(problems)
    operations = sum(len(ops) for ops in schema.raw_schema["paths"].values())
    assert tally.get("fuzzing:success", 0) == operations >= 10, tally
    assert tally.get("coverage:success", 0) == operations, tally


async def test_the_schema_carries_this_instances_limits_models_genres_and_auth(make_settings) -> None:
    settings = make_settings(api_keys=[KEY], max_history=7, max_events=9, max_body_bytes=5000)
    async with serve(settings) as client:
        doc = (await client.get("/openapi.json")).json()
    parts = doc["components"]["schemas"]
    history = parts["RecommendRequest"]["properties"]["history"]["anyOf"][0]
    assert history["maxItems"] == 7
    assert parts["ExplainGenreRequest"]["properties"]["history"]["anyOf"][0]["maxItems"] == 7
    assert parts["EventsRequest"]["properties"]["events"]["maxItems"] == 9
    assert parts["RecommendRequest"]["properties"]["model"]["anyOf"][0]["enum"] == ["sasrec", "llmsrec"]
    assert parts["Filters"]["properties"]["genres"]["anyOf"][0]["items"]["enum"] == GENRES
    assert doc["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "Required when API keys are set.",
    }
    recommend = doc["paths"]["/v1/recommend"]["post"]
    assert recommend["security"] == [{"APIKeyHeader": []}]
    assert {"400", "401", "413", "415", "422", "503"} <= set(recommend["responses"])
    assert recommend["requestBody"]["x-max-body-bytes"] == 5000
    assert "at most 5000 bytes" in recommend["requestBody"]["description"]
    assert "404" in doc["paths"]["/v1/items/{item_id}"]["get"]["responses"]
    assert "security" not in doc["paths"]["/metrics"]["get"]  # metrics_public: no key needed
    assert "/" not in doc["paths"] and "/static/{name}" not in doc["paths"]


@pytest.mark.parametrize("default_model", ["auto", "allmrec"])
async def test_allmrec_bounds_k_in_schema_and_behaviour_alike(
    make_settings, allmrec_bundle: Path, allmrec_backend: Any, default_model: str
) -> None:
    bodies = [
        {"history": [1, 2], "k": 21, "model": "allmrec"},
        {"history": [1, 2], "k": 20, "model": "allmrec"},
        {"history": [1, 2], "k": 21, "model": "sasrec"},
        {"history": [1, 2], "k": 21},  # the default model's bound
    ]
    settings = make_settings(bundle=allmrec_bundle, default_model=default_model)
    async with serve(settings, backend=allmrec_backend) as client:
        doc = (await client.get("/openapi.json")).json()
        answers = [await client.post("/v1/recommend", json=body) for body in bodies]
    schema = {"$ref": "#/components/schemas/RecommendRequest", "components": doc["components"]}
    validator = jsonschema_rs.validator_for(schema)
    admitted = [validator.is_valid(body) for body in bodies]
    assert admitted == [False, True, True, default_model == "auto"]
    assert [a.status_code == 200 for a in answers] == admitted, [a.text for a in answers]


def test_a_schema_fastapi_no_longer_writes_as_expected_fails_loudly() -> None:
    with pytest.raises(KeyError, match="no 'enum'"):
        find_branch({"anyOf": [{"type": "string"}, {"type": "null"}]}, "enum")


async def test_without_keys_the_schema_asks_for_none(make_settings) -> None:
    async with serve(make_settings()) as client:
        doc = (await client.get("/openapi.json")).json()
    assert "securitySchemes" not in doc["components"]
    for operations in doc["paths"].values():
        for operation in operations.values():
            assert "security" not in operation and "401" not in operation["responses"]


async def test_a_request_needs_a_user_id_or_a_history_in_schema_and_behaviour(make_settings) -> None:
    async with serve(make_settings()) as client:
        doc = (await client.get("/openapi.json")).json()
        empty = await client.post("/v1/recommend", json={})
        nulls = await client.post("/v1/recommend", json={"user_id": None, "history": None})
    rule = doc["components"]["schemas"]["RecommendRequest"]["anyOf"]
    assert [branch["required"] for branch in rule] == [["user_id"], ["history"]]
    assert rule[0]["properties"]["user_id"] == {"type": "string"}  # null is not a user id
    for response in (empty, nulls):
        assert "give a user_id (stored history) or a history" in assert_envelope(response, 422)["message"]


async def test_integral_floats_are_integers_as_json_schema_says(make_settings) -> None:
    async with serve(make_settings()) as client:
        as_floats = await client.post(
            "/v1/recommend",
            json={"history": [5.0, {"item_id": 9.0, "timestamp": 1e9}], "k": 4.0, "model": "sasrec"},
        )
        as_ints = await client.post(
            "/v1/recommend",
            json={"history": [5, {"item_id": 9, "timestamp": 1e9}], "k": 4, "model": "sasrec"},
        )
        events = await client.post(
            "/v1/users/floaty/events", json={"events": [{"item_id": 3.0, "timestamp": 7}]}
        )
        stored = (await client.get("/v1/users/floaty/history")).json()
        fraction = await client.post("/v1/recommend", json={"history": [1], "k": 4.5})
        genres = await client.post("/v1/explain/genre", json={"history": [5.0], "top_n": 2.0})
    assert as_floats.status_code == 200, as_floats.text
    assert as_floats.json()["items"] == as_ints.json()["items"] and len(as_ints.json()["items"]) == 4
    assert events.status_code == 200 and stored["events"] == [{"item_id": 3, "timestamp": 7.0}]
    assert "body.k: Input should be a valid integer" in assert_envelope(fraction, 422)["message"]
    assert genres.status_code == 200 and len(genres.json()["genres"]) == 2


async def test_the_longest_history_the_schema_allows_is_served_and_one_more_is_refused(make_settings) -> None:
    async with serve(make_settings(max_history=30, max_events=5)) as client:
        doc = (await client.get("/openapi.json")).json()
        history = doc["components"]["schemas"]["RecommendRequest"]["properties"]["history"]
        limit = history["anyOf"][0]["maxItems"]
        at_limit = await client.post("/v1/recommend", json={"history": list(range(1, limit + 1)), "k": 3})
        over = await client.post("/v1/recommend", json={"history": list(range(1, limit + 2)), "k": 3})
        events = [{"item_id": i, "timestamp": i} for i in range(1, 7)]
        too_many = await client.post("/v1/users/u/events", json={"events": events})
    assert limit == 30 and at_limit.status_code == 200
    assert assert_envelope(over, 422)["message"] == "history has 31 events; the limit is 30 (max_history)"
    assert "6 events in one request; the limit is 5" in assert_envelope(too_many, 422)["message"]


def test_with_default_limits_the_largest_body_the_schema_admits_fits_the_byte_limit() -> None:
    """Every list at its bound, every value at its longest, serialized as Schemathesis does (json.dumps):
    under max_body_bytes, so with the defaults 413 never answers a schema-valid request."""
    defaults = Settings(bundle=Path("unused"))
    longest_float = 2.2250738585072014e-308  # 23 characters, the longest repr of a float in [0, 4102444800]
    event = {"item_id": MAX_ITEM_ID, "timestamp": longest_float}
    body = {
        "user_id": "u" * 128,
        "history": [event] * defaults.limits.max_history,
        "k": 100,
        "exclude_seen": False,
        "model": "allmrec",
        "filters": {
            "genres": ["\U0001f3ac" * 64] * 64,  # astral characters: 12 bytes each once escaped
            "include_item_ids": [MAX_ITEM_ID] * MAX_FILTER_IDS,
            "exclude_item_ids": [MAX_ITEM_ID] * MAX_FILTER_IDS,
        },
    }
    events = {"events": [event] * defaults.limits.max_events}
    for largest in (body, events):
        assert len(json.dumps(largest).encode()) < defaults.limits.max_body_bytes
