"""docker-compose.yml: redis with a healthcheck and persistence, the API waits for a healthy Redis and gets
every setting, GPUs only outside the default profile, vLLM private, bundle read-only; and the real compose
client accepts the file when one is installed (`make compose-client`)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from app.backends.vllm import check_vllm_version
from app.settings import Settings
from tests.deploy.parsing import ROOT, read_compose

API_SERVICES = ("api", "api-gpu")


@pytest.fixture(scope="module")
def compose():
    return read_compose()


def gpu_devices(service: dict) -> list[dict]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return [d for d in devices if "gpu" in d.get("capabilities", [])]


def test_redis_is_healthchecked_and_persistent(compose) -> None:
    redis = compose["services"]["redis"]
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]
    command = [str(part) for part in redis["command"]]
    assert command[command.index("--appendonly") + 1] == "${REDIS_APPENDONLY:-yes}"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "ports" not in redis  # only the API reaches it


@pytest.mark.parametrize("name", API_SERVICES)
def test_api_waits_for_healthy_redis_and_reads_the_bundle_read_only(compose, name: str) -> None:
    api = compose["services"][name]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "${BUNDLE_SOURCE:-bundle}:/bundle:ro" in api["volumes"]
    env = api["environment"]
    assert env["LLMREC_BUNDLE"] == "/bundle" and env["LLMREC_REDIS_URL"].endswith("redis://redis:6379/0}")
    missing = {f"LLMREC_{n.upper()}" for n in Settings.model_fields} - set(env)
    assert not missing, f"{name} does not pass {sorted(missing)} through (x-llmrec-settings)"
    assert set(api["networks"]) == {"frontend", "backend"}


def test_gpus_only_outside_the_default_profile(compose) -> None:
    services = compose["services"]
    default = [n for n, s in services.items() if not s.get("profiles")]
    assert set(default) == {"redis", "api"}  # `docker compose up` = the CPU stack
    assert all(not gpu_devices(services[n]) for n in default)
    with_gpu = {n for n, s in services.items() if gpu_devices(s)}
    assert with_gpu == {"api-gpu", "vllm"}
    assert services["api-gpu"]["profiles"] == ["gpu"] and services["vllm"]["profiles"] == ["vllm"]
    assert services["api"]["build"]["target"] == "cpu" and services["api-gpu"]["build"]["target"] == "gpu"
    assert services["api"]["environment"]["LLMREC_DEVICE"] == "cpu"


def test_vllm_is_private_and_takes_prompt_embeddings(compose) -> None:
    vllm = compose["services"]["vllm"]
    assert "ports" not in vllm and "expose" not in vllm
    assert vllm["networks"] == ["backend"] and compose["networks"]["backend"]["internal"] is True
    assert vllm["entrypoint"] == ["vllm", "serve"] and "--enable-prompt-embeds" in vllm["command"]
    assert vllm["command"][0] == "${VLLM_MODEL:-/bundle/llm}"
    assert "${BUNDLE_SOURCE:-bundle}:/bundle:ro" in vllm["volumes"]
    assert vllm["environment"]["HF_HUB_OFFLINE"] == "1"  # the internal network has no way out anyway


def test_vllm_image_is_a_supported_version(compose) -> None:
    image = compose["services"]["vllm"]["image"]  # ${VLLM_IMAGE:-vllm/vllm-openai:vX.Y.Z}
    tag = image.split(":-", 1)[1].rstrip("}").rsplit(":", 1)[1]
    check_vllm_version(tag.lstrip("v"))  # StartupError outside app.backends.vllm.SUPPORTED_VLLM


def test_train_is_one_shot_and_fills_the_bundle_volume(compose) -> None:
    train = compose["services"]["train"]
    assert train["profiles"] == ["train"] and train["build"]["target"] == "train"
    assert train["restart"] == "no"
    assert "${BUNDLE_SOURCE:-bundle}:/bundle" in train["volumes"]  # writable here, read-only in the API
    assert "bundle" in compose["volumes"]


def compose_clients() -> list[list[str]]:
    clients = []
    if shutil.which("docker-compose"):
        clients.append(["docker-compose"])
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            clients.append(["docker", "compose"])
    return clients


@pytest.mark.parametrize("profiles", [[], ["gpu", "vllm", "train"]], ids=["default", "all-profiles"])
def test_compose_client_accepts_the_file(profiles: list[str], tmp_path) -> None:
    clients = compose_clients()
    if not clients:
        pytest.skip("no docker-compose or `docker compose` client installed (`make compose-client` adds one)")
    flags = [arg for p in profiles for arg in ("--profile", p)]
    for client in clients:
        # an empty --env-file: the developer's own .env must not change the result
        (tmp_path / "empty.env").write_text("")
        base = [*client, "--project-directory", str(ROOT), "--env-file", str(tmp_path / "empty.env")]
        base += ["-f", str(ROOT / "docker-compose.yml"), *flags]
        check = subprocess.run([*base, "config", "-q"], capture_output=True, text=True, check=False)
        assert check.returncode == 0, f"{' '.join(client)} config -q failed:\n{check.stderr}"
        # docker-compose 1.x lists every service whatever the profile; v2 lists the active ones
        if client == ["docker", "compose"]:
            listed = subprocess.run(
                [*base, "config", "--services"], capture_output=True, text=True, check=True
            )
            expected = {"redis", "api"} | ({"api-gpu", "vllm", "train"} if profiles else set())
            assert set(listed.stdout.split()) == expected
