""".env.example documents every field of app.settings.Settings (LLMREC_ + name), with a one-line doc and
the real default, and no variable that nothing reads."""

from __future__ import annotations

import re

import pytest

from app.settings import Settings, env_defaults, env_names
from tests.deploy.parsing import ROOT, read_compose, read_env_example

PREFIX = "LLMREC_"
# LLMREC_* variables read outside Settings, and by what (checked below, so the list cannot go stale)
OUTSIDE_SETTINGS = {
    "LLMREC_LOG_LEVEL": "app/cli.py",
    "LLMREC_DATA_DIR": "training/cli.py",
    "LLMREC_CACHE_DIR": "training/common/llm.py",
    "LLMREC_WORK_DIR": "deploy/build-bundle.sh",
}


@pytest.fixture(scope="module")
def entries():
    return read_env_example()


def field_vars() -> set[str]:
    return set(env_names())  # every variable Settings reads, those of its groups (LLMREC_REDIS_URL) included


def test_every_setting_is_documented(entries) -> None:
    missing = field_vars() - set(entries)
    assert not missing, f".env.example lacks {sorted(missing)}: document each new Settings field there"


def test_no_unknown_llmrec_variable(entries) -> None:
    unknown = {n for n in entries if n.startswith(PREFIX)} - field_vars() - set(OUTSIDE_SETTINGS)
    assert not unknown, f".env.example documents variables nothing reads: {sorted(unknown)}"
    for name, reader in OUTSIDE_SETTINGS.items():
        assert name in entries, f"{name} ({reader}) is not documented"
        assert name in (ROOT / reader).read_text(), f"{reader} no longer reads {name}"


def test_each_entry_has_a_one_line_doc(entries) -> None:
    undocumented = [name for name, entry in entries.items() if len(entry.doc) < 10]
    assert not undocumented, f"no comment line right above {undocumented}"


def test_documented_defaults_are_the_real_defaults(entries, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    for name, default in env_defaults().items():  # the bundle has none: its line shows the images' path
        entry = entries[name]
        if default is None:
            assert entry.value == "", f"{entry.name} defaults to unset; the example shows {entry.value!r}"
            continue
        with monkeypatch.context() as env:
            env.setenv(entry.name, entry.value)
            parsed = Settings(bundle=ROOT).env_view()[name]
        assert parsed == default, (
            f"{entry.name}={entry.value} parses to {parsed!r}, the default is {default!r}"
        )


def test_compose_variables_are_documented_and_used(entries) -> None:
    compose_text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    assert used - set(entries) == set(), f"compose uses undocumented {sorted(used - set(entries))}"
    plain = {n for n in entries if not n.startswith(PREFIX)}
    assert plain - used == set(), (
        f".env.example documents compose variables compose never uses: {plain - used}"
    )
    assert read_compose()["services"]  # and the file is valid YAML


def test_env_example_is_kept_in_the_repository_and_env_is_not() -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored and ".env.example" not in ignored
