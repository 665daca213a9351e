"""deploy/k8s: every manifest parses, kustomization lists them all, probes hit real routes of the app on the
container's port, selectors match, the HPA scales the API on CPU, the bundle is read-only, vLLM takes
prompt embeddings on a GPU, and image/env names agree with the Dockerfile, compose and .env.example."""

from __future__ import annotations

from typing import Any

import pytest

from app.settings import VLLM_SERVED_MODEL_NAME
from tests.deploy.parsing import (
    ROOT,
    app_route_paths,
    flag_values,
    read_compose,
    read_dockerfile,
    read_env_example,
    read_k8s,
    served_model_names,
)

K8S = ROOT / "deploy" / "k8s"


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict[str, Any]]]:
    return read_k8s(K8S)


@pytest.fixture(scope="module")
def objects(manifests) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for file, docs in manifests.items():
        for doc in docs:
            if doc.get("kind") == "Kustomization":
                continue
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice ({file})"
            assert doc["apiVersion"], f"{key} has no apiVersion"
            found[key] = doc
    return found


def container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    (match,) = [c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return match


def test_kustomization_lists_every_manifest_but_the_secret_example(manifests) -> None:
    (kustomization,) = manifests["kustomization.yaml"]
    expected = set(manifests) - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kustomization["resources"]) == expected


def test_api_probes_hit_real_routes_on_the_served_port(objects) -> None:
    api = container(objects[("Deployment", "llmrec-api")], "api")
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    _, stages = read_dockerfile()
    assert ports == {"http": int(stages[-1].last("EXPOSE") or 0)}
    probes = {kind: api[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz" and probes["livenessProbe"]["path"] == "/healthz"
    for kind, probe in probes.items():
        assert probe["path"] in app_route_paths(), f"{kind} {probe['path']} is no route of the app"
        assert probe["port"] in ports


def test_api_runs_the_cpu_image_as_its_user_with_a_read_only_bundle(objects) -> None:
    deployment = objects[("Deployment", "llmrec-api")]
    api, pod = container(deployment, "api"), deployment["spec"]["template"]["spec"]
    repo, tag = api["image"].rsplit(":", 1)
    _, stages = read_dockerfile()
    assert tag in {s.name for s in stages} and repo.rsplit("/", 1)[-1] == "llmrec"
    assert read_compose()["services"]["api"]["image"] == "${IMAGE_REPO:-llmrec}:cpu"
    uid = (stages[-1].last("USER") or "").split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True and str(pod["securityContext"]["runAsUser"]) == uid
    mounts = {m["name"]: m for m in api["volumeMounts"]}
    assert mounts["bundle"]["mountPath"] == "/bundle" and mounts["bundle"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["bundle"]["persistentVolumeClaim"]
    assert claim["readOnly"] is True and ("PersistentVolumeClaim", claim["claimName"]) in objects
    assert api["resources"]["requests"]["cpu"]  # the HPA's utilisation is relative to it


def test_api_env_comes_from_known_settings_and_a_secret(objects) -> None:
    api = container(objects[("Deployment", "llmrec-api")], "api")
    sources = {next(iter(s)): next(iter(s.values()))["name"] for s in api["envFrom"]}
    config = objects[("ConfigMap", sources["configMapRef"])]
    documented = set(read_env_example())
    names = set(config["data"]) | {e["name"] for e in api["env"]}
    llmrec_names = {n for n in names if n.startswith("LLMREC_")}
    assert llmrec_names <= documented, f"not in .env.example: {sorted(llmrec_names - documented)}"
    assert "LLMREC_API_KEYS" not in config["data"]  # keys belong in the Secret
    (secret,) = read_k8s(K8S)["secret.example.yaml"]
    assert secret["metadata"]["name"] == sources["secretRef"]
    assert set(secret["stringData"]) == {"LLMREC_API_KEYS"}


def test_services_select_their_pods(objects) -> None:
    workloads = {k: v for k, v in objects.items() if k[0] in {"Deployment", "StatefulSet"}}
    for (_, name), service in ((k, v) for k, v in objects.items() if k[0] == "Service"):
        selected = [
            w
            for w in workloads.values()
            if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} workloads"
        port_names = {
            p["name"] for c in selected[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    for workload in workloads.values():
        assert workload["spec"]["selector"]["matchLabels"].items() <= (
            workload["spec"]["template"]["metadata"]["labels"].items()
        )


def test_hpa_scales_the_api_on_cpu(objects) -> None:
    (hpa,) = [v for k, v in objects.items() if k[0] == "HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "llmrec-api")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_redis_is_persistent_and_points_where_the_config_says(objects) -> None:
    redis = objects[("StatefulSet", "redis")]
    args = container(redis, "redis")["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and redis["spec"]["volumeClaimTemplates"]
    config = objects[("ConfigMap", "llmrec-config")]["data"]
    port = objects[("Service", "redis")]["spec"]["ports"][0]["port"]
    assert config["LLMREC_REDIS_URL"] == f"redis://redis:{port}/0"


def test_vllm_takes_prompt_embeddings_on_a_gpu_behind_a_network_policy(objects) -> None:
    deployment = objects[("Deployment", "vllm")]
    vllm = container(deployment, "vllm")
    assert vllm["command"] == ["vllm", "serve"] and "--enable-prompt-embeds" in vllm["args"]
    assert vllm["args"][0] == "/bundle/llm"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert vllm["image"] == read_compose()["services"]["vllm"]["image"].split(":-", 1)[1].rstrip("}")
    assert {m["mountPath"]: m.get("readOnly") for m in vllm["volumeMounts"]}["/bundle"] is True
    policy = objects[("NetworkPolicy", "vllm-from-api-only")]
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    (allowed,) = policy["spec"]["ingress"][0]["from"]
    api_labels = objects[("Deployment", "llmrec-api")]["spec"]["template"]["metadata"]["labels"]
    assert allowed["podSelector"]["matchLabels"].items() <= api_labels.items()


def test_vllm_serves_the_name_the_api_sends_from_a_gpu_of_its_own(objects) -> None:
    args = [str(a) for a in container(objects[("Deployment", "vllm")], "vllm")["args"]]
    config = objects[("ConfigMap", "llmrec-config")]["data"]
    sent = config.get("LLMREC_VLLM_GENERATE_MODEL", VLLM_SERVED_MODEL_NAME)
    assert served_model_names(args) == [sent]  # vLLM answers 404 to any other model name
    # the device plugin hands the pod a whole GPU, so its share only has to leave vLLM's own headroom
    assert float(flag_values(args, "--gpu-memory-utilization")[0]) <= 0.9


def test_build_job_uses_the_train_image_and_writes_the_bundle_claim(objects) -> None:
    job = objects[("Job", "llmrec-build-bundle")]
    train = container(job, "train")
    assert train["image"] == "llmrec:train"
    mounts = {m["mountPath"]: m for m in train["volumeMounts"]}
    assert not mounts["/bundle"].get("readOnly")
    claims = {
        v["name"]: v.get("persistentVolumeClaim", {}).get("claimName")
        for v in job["spec"]["template"]["spec"]["volumes"]
    }
    assert claims[mounts["/bundle"]["name"]] == "llmrec-bundle"
