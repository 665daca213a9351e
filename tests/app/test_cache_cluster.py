"""Redis Cluster: a user's keys share one hash slot (so append_events' MULTI never crosses slots), vector keys
spread over the slots, and RedisStore(cluster=True) works against a real one-node cluster started here."""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.cluster import key_slot

from app.cache import VECTOR, content_key, history_key
from app.domain import Event
from app.redis_store import RedisSettings, RedisStore
from app.schemas import USER_ID_PATTERN
from tests.app.conftest import serve
from tests.app.redis_process import RedisProcess, free_port

user_ids = st.from_regex(USER_ID_PATTERN, fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(user=user_ids, prefix=st.sampled_from(["llmrec", "a.b:c", "tenant-7"]))
def test_history_key_slot_is_the_users_tag(user: str, prefix: str) -> None:
    key = history_key(prefix, user)
    assert key.count("{") == 1 and key.count("}") == 1  # no id can open or close a second tag
    assert key[key.index("{") + 1 : key.index("}")] == f"user:{user}"
    assert key_slot(key.encode()) == key_slot(f"user:{user}".encode())  # the prefix does not move the slot


def test_vector_keys_keep_the_bundle_version_and_spread_over_slots() -> None:
    keys = [content_key("llmrec", "uv", "v42", ["t1", [i, i + 1, i + 2], None]) for i in range(1, 501)]
    assert all(k.startswith("llmrec:uv:v42:") and "{" not in k for k in keys)
    slots = {key_slot(k.encode()) for k in keys}
    assert len(slots) > 450  # 500 keys over 16384 slots: a shared tag would put them all on one node


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis in cluster mode owning all 16384 slots (one node is a valid cluster). The bus port is
    chosen too: Redis's default (port + 10000) does not exist for a free port above 55535."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: no Redis Cluster node to start (make redis installs it)")
    port, bus = free_port(), free_port()
    while bus == port:
        bus = free_port()
    cluster = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", str(bus))
    server = RedisProcess(port, tmp_path_factory.mktemp("cluster"), cluster)
    server.start()
    try:
        client = redis.Redis(port=server.port, socket_timeout=2)
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        for _ in range(100):
            if b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the one-node Redis Cluster never reached cluster_state:ok")
        client.close()
        yield server.url
    finally:
        server.kill()


@pytest.fixture
async def cluster_store(cluster_url: str) -> AsyncIterator[RedisStore]:
    cluster = RedisSettings(cluster_url, cluster=True, prefix="llmrec-test", timeout_s=1, max_connections=4)
    store = RedisStore(cluster, ttl_s=60, history_ttl_s=600)
    yield store
    await store.close()


@pytest.mark.anyio
async def test_store_on_a_real_cluster(cluster_store: RedisStore, cluster_url: str) -> None:
    assert await cluster_store.ping()
    key = content_key("llmrec-test", "uv", "v1", ["t1", [3, 1, 2], None])
    vector = np.linspace(-1, 1, 8, dtype=np.float32)
    await cluster_store.set(key, vector, VECTOR)
    np.testing.assert_array_equal(await cluster_store.get(key, VECTOR), vector)
    # the MULTI of append_events runs on the user's slot; it would raise CrossSlotTransactionError otherwise
    assert await cluster_store.append_events("alice@x", [Event(5, 50), Event(1, 10)], cap=2) == (2, 2)
    assert await cluster_store.append_events("alice@x", [Event(9, 90)], cap=2) == (1, 2)
    assert await cluster_store.get_history("alice@x") == [Event(5, 50.0), Event(9, 90.0)]
    # a plain (non-cluster) client sees the cluster's cluster mode: what redis_cluster=True is for
    info = redis.Redis.from_url(cluster_url).info("cluster")
    assert info["cluster_enabled"] == 1


@pytest.mark.anyio
async def test_service_on_a_cluster(make_settings, cluster_url: str) -> None:
    """redis_cluster=True end to end: a stored history, a recommendation from it, its vector cached."""
    settings = make_settings(redis_url=cluster_url, redis_cluster=True, redis_prefix="llmrec-e2e")
    pairs = [(3, 300.0), (1, 100.0), (2, 200.0)]
    async with serve(settings) as client:
        assert (await client.get("/readyz")).status_code == 200
        posted = await client.post(
            "/v1/users/u-1/events", json={"events": [{"item_id": i, "timestamp": t} for i, t in pairs]}
        )
        assert posted.json()["history_length"] == 3
        first = (await client.post("/v1/recommend", json={"user_id": "u-1", "k": 3})).json()
        again = (await client.post("/v1/recommend", json={"user_id": "u-1", "k": 3})).json()
    assert first["history_source"] == "stored" and first["history_length"] == 3
    assert not first["degraded"] and first["model"] == "llmsrec"
    assert not first["cache_hit"] and again["cache_hit"]  # the user vector went into the cluster
    assert [r["item_id"] for r in again["items"]] == [r["item_id"] for r in first["items"]]
    node = redis.Redis.from_url(cluster_url)
    assert node.zcard(history_key("llmrec-e2e", "u-1")) == 3
    node.close()
