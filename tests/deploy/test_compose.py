"""docker-compose.yml: redis with a healthcheck and persistence, the API waits for a healthy Redis and gets
every setting, GPUs only outside the default profile, vLLM private and serving the name the API sends, the
single-GPU stack within GPU memory, bundle read-only; and the real compose client accepts the file (and
resolves it as these tests do) when one is installed (`make compose-client`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from app.backends.vllm import check_vllm_version
from app.settings import VLLM_SERVED_MODEL_NAME, Settings, env_names
from tests.deploy.parsing import (
    ROOT,
    flag_values,
    gpu_device_ids,
    interpolate,
    read_compose,
    served_model_names,
)

API_SERVICES = ("api", "api-gpu")
COMPOSE_VARIABLE_NAME = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")


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
    missing = set(env_names()) - set(env)
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


def vllm_command(compose, env: dict[str, str]) -> list[str]:
    """The vllm service's `vllm serve` arguments as compose resolves them with `env` as shell and .env."""
    return [interpolate(str(arg), env) for arg in compose["services"]["vllm"]["command"]]


def api_settings(compose, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings api-gpu starts with when `env` is the shell and .env (unset values: field defaults)."""
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in compose["services"]["api-gpu"]["environment"].items():
        resolved = env.get(name) if value is None else interpolate(str(value), env)
        if name.startswith("LLMREC_") and name != "LLMREC_LOG_LEVEL" and resolved is not None:
            monkeypatch.setenv(name, resolved)
    return Settings()


@pytest.mark.parametrize("env", [{}, {"LLMREC_VLLM_GENERATE_MODEL": "movie-llm"}], ids=["default", "renamed"])
def test_vllm_serves_the_model_name_the_api_sends(compose, env, monkeypatch: pytest.MonkeyPatch) -> None:
    sent = api_settings(compose, env, monkeypatch).vllm.generate_model
    assert sent == env.get("LLMREC_VLLM_GENERATE_MODEL", VLLM_SERVED_MODEL_NAME)
    assert served_model_names(vllm_command(compose, env)) == [sent]  # vLLM 404s any other name


def test_single_gpu_stack_fits_in_gpu_memory(compose, monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM refuses to start unless utilisation x total is free (vllm/v1/worker/utils.py request_memory):
    on the default single GPU the two engines' shares must leave >= 10 % for the API's transformers copy,
    FAISS and the CUDA contexts."""
    api, vllm = compose["services"]["api-gpu"], compose["services"]["vllm"]
    assert gpu_device_ids(api, {}) == gpu_device_ids(vllm, {}) == ["0"]  # one GPU unless told otherwise
    server = float(flag_values(vllm_command(compose, {}), "--gpu-memory-utilization")[0])
    engine = api_settings(compose, {"LLMREC_LLM_BACKEND": "vllm"}, monkeypatch).vllm.gpu_memory_utilization
    assert server + engine <= 0.9, f"vllm {server} + api-gpu {engine} reserve more than 0.9 of one GPU"
    split = {"VLLM_GPU_DEVICE": "1"}  # the two-GPU layout in deploy/README.md
    assert gpu_device_ids(api, split) == ["0"] and gpu_device_ids(vllm, split) == ["1"]


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
    # the shell's variables must not change the result either (compose reads them before any env file)
    used = set(COMPOSE_VARIABLE_NAME.findall((ROOT / "docker-compose.yml").read_text()))
    env = {k: v for k, v in os.environ.items() if k not in used and not k.startswith("LLMREC_")}
    for client in clients:
        # an empty --env-file: the developer's own .env must not change the result
        (tmp_path / "empty.env").write_text("")
        base = [*client, "--project-directory", str(ROOT), "--env-file", str(tmp_path / "empty.env")]
        base += ["-f", str(ROOT / "docker-compose.yml"), *flags]
        check = subprocess.run([*base, "config", "-q"], capture_output=True, text=True, check=False, env=env)
        assert check.returncode == 0, f"{' '.join(client)} config -q failed:\n{check.stderr}"
        resolved = subprocess.run([*base, "config"], capture_output=True, text=True, check=True, env=env)
        services = yaml.safe_load(resolved.stdout)["services"]
        if "vllm" in services:  # compose resolves the vLLM command as these tests do
            assert [str(a) for a in services["vllm"]["command"]] == vllm_command(read_compose(), {})
        # docker-compose 1.x lists every service whatever the profile; v2 lists the active ones
        if client == ["docker", "compose"]:
            listed = subprocess.run(
                [*base, "config", "--services"], capture_output=True, text=True, check=True, env=env
            )
            expected = {"redis", "api"} | ({"api-gpu", "vllm", "train"} if profiles else set())
            assert set(listed.stdout.split()) == expected
