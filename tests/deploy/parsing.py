"""Readers for the deployment files (.env.example, Dockerfile, .dockerignore, compose, k8s) shared by the
tests in this folder; plain parsing, no docker or kubectl needed."""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import pkgutil
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


@dataclass
class EnvEntry:
    name: str
    value: str
    doc: str  # the comment line right above the entry


def read_env_example(path: Path = ROOT / ".env.example") -> dict[str, EnvEntry]:
    """NAME → entry for every `NAME=value` line (commented out or not); duplicates raise."""
    entries: dict[str, EnvEntry] = {}
    previous = ""
    for line in path.read_text().splitlines():
        match = ENV_LINE.match(line.strip())
        if match:
            name, value = match.groups()
            if name in entries:
                raise AssertionError(f".env.example lists {name} twice")
            is_doc = previous.startswith("#") and not ENV_LINE.match(previous)
            doc = previous.lstrip("#").strip() if is_doc else ""
            entries[name] = EnvEntry(name, value.strip(), doc)
        previous = line.strip()
    return entries


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, rest of the line)

    def last(self, keyword: str) -> str | None:
        found = [rest for kw, rest in self.instructions if kw == keyword]
        return found[-1] if found else None

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def read_dockerfile(path: Path = ROOT / "Dockerfile") -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages in order); continuation lines are joined, ${ARG} in FROM resolved."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, base))
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def stage_chain(stages: list[Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    by_name = {s.name: s for s in stages}
    chain = [by_name[name]]
    while chain[-1].base in by_name:
        chain.append(by_name[chain[-1].base])
    return chain


def inherited(stages: list[Stage], name: str, keyword: str) -> str | None:
    """The value of KEYWORD in effect in a stage (its own, else the nearest base stage's)."""
    for stage in stage_chain(stages, name):
        value = stage.last(keyword)
        if value is not None:
            return value
    return None


def exec_form(rest: str) -> list[str]:
    """A JSON-array (exec form) instruction as a list; a shell form split like a shell would."""
    return list(json.loads(rest)) if rest.startswith("[") else shlex.split(rest)


def dockerignore_patterns(path: Path = ROOT / ".dockerignore") -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pattern_matches(pattern: str, rel: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent directories ('**/' = any depth)."""
    pattern = pattern.strip("/")
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    options = [pattern] + ([pattern[3:]] if pattern.startswith("**/") else [])
    for option in options:
        depth = option.count("/") + 1
        for cand in candidates:
            if option.startswith("**/"):
                if fnmatch.fnmatchcase(cand, option) or fnmatch.fnmatchcase(cand, "*/" + option[3:]):
                    return True
            elif cand.count("/") + 1 == depth and fnmatch.fnmatchcase(cand, option):
                return True
    return False


def is_ignored(rel: str, patterns: list[str]) -> bool:
    """Last matching pattern wins; '!' re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        if _pattern_matches(pattern.lstrip("!"), rel):
            ignored = not negate
    return ignored


def build_context(patterns: list[str], root: Path = ROOT) -> dict[str, int]:
    """rel path → size of every file docker would send (ignored directories are not walked)."""
    files: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not is_ignored(prefix + d, patterns)]
        for name in filenames:
            rel = prefix + name
            if not is_ignored(rel, patterns) and os.path.isfile(os.path.join(dirpath, name)):
                files[rel] = os.path.getsize(os.path.join(dirpath, name))
    return files


def read_compose(path: Path = ROOT / "docker-compose.yml") -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


COMPOSE_VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?:(:?-)([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """A compose value with ${NAME}, ${NAME:-default} (unset or empty) and ${NAME-default} (unset) resolved
    against `env`, as the compose client does with the shell and .env."""

    def resolve(match: re.Match[str]) -> str:
        name, op, default = match.groups()
        found = env.get(name)
        if (op == ":-" and not found) or (op == "-" and found is None):
            return default
        return found or ""

    return COMPOSE_VARIABLE.sub(resolve, value)


def flag_values(args: list[str], flag: str) -> list[str]:
    """The values after `flag` in a command line, up to the next --option."""
    if flag not in args:
        return []
    values = []
    for arg in args[args.index(flag) + 1 :]:
        if arg.startswith("--"):
            break
        values.append(arg)
    return values


def served_model_names(serve_args: list[str]) -> list[str]:
    """The model names `vllm serve MODEL ...` answers to: --served-model-name's values, else MODEL itself
    (vLLM answers 404 "model does not exist" to any other name in a request)."""
    return flag_values(serve_args, "--served-model-name") or serve_args[:1]


def gpu_device_ids(service: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The GPUs a compose service reserves (deploy.resources.reservations.devices[].device_ids), resolved."""
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return [interpolate(str(i), env) for d in devices for i in d.get("device_ids", [])]


def read_k8s(folder: Path = ROOT / "deploy" / "k8s") -> dict[str, list[dict[str, Any]]]:
    """file name → its YAML documents (empty documents dropped)."""
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(folder.glob("*.yaml"))
    }


def app_route_paths() -> set[str]:
    """Paths of every router in app.routes (what create_app mounts), without building an app or a bundle."""
    import app.routes

    paths: set[str] = set()
    for info in pkgutil.iter_modules(app.routes.__path__):
        router = getattr(importlib.import_module(f"app.routes.{info.name}"), "router", None)
        paths |= {route.path for route in getattr(router, "routes", [])}
    return paths
