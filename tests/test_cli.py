"""The `llmrec` command as users script it: help everywhere, errors as one message (exit 2, no traceback),
real data prepared and evaluated through the CLI giving the library's numbers, export bundle + verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from llmrec.cli import build_cli
from tests.training.test_export import toy_processed, write_sasrec
from training.data.dataset import load_prepared
from training.evaluation.protocol import evaluate
from training.scorers import load_scorer

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(build_cli(), list(args))
    return result.exit_code, result.output


def command_paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under a (typer-vendored) click group."""
    paths = []
    for name, command in group.commands.items():
        paths.append((*prefix, name))
        if hasattr(command, "commands"):
            paths += command_paths(command, (*prefix, name))
    return paths


def test_every_command_has_useful_help() -> None:
    paths = command_paths(typer.main.get_command(build_cli()))
    expected = {
        ("data", "prepare"),
        ("data", "download"),
        ("train", "sasrec"),
        ("train", "llmsrec"),
        ("eval",),
    }
    expected |= {("export", "bundle"), ("export", "verify"), ("serve",)}
    assert expected <= set(paths)
    for path in paths:
        code, out = invoke(*path, "--help")
        assert code == 0, (path, out)
        assert "Usage:" in out and len(out.split()) > 15, path


def test_unknown_dataset_is_one_clear_error(tmp_path: Path) -> None:
    out_dir = tmp_path / "never-written"
    code, out = invoke("data", "prepare", "--dataset", "nope", "--out", str(out_dir))
    assert code == 2
    assert "dataset 'nope' is unknown" in out and "ml-100k" in out
    assert "Traceback" not in out
    assert not out_dir.exists()


def test_missing_source_names_the_file(tmp_path: Path) -> None:
    code, out = invoke(
        "data", "prepare", "--dataset", "ml-100k", "--source", str(tmp_path), "--out", str(tmp_path / "o")
    )
    assert code == 2 and "u.data" in out and "Traceback" not in out
    assert not (tmp_path / "o").exists()


def test_bad_config_value_is_refused_by_name(tmp_path: Path) -> None:
    data = toy_processed(tmp_path / "data")
    code, out = invoke("train", "sasrec", "--data", str(data), "--out", str(tmp_path / "m"), "--epochs", "0")
    assert code == 2 and "epochs" in out and "Traceback" not in out


def test_literal_flags_offer_their_choices(tmp_path: Path) -> None:
    code, out = invoke("train", "sasrec", "--data", "d", "--out", "o", "--eval-protocol", "1+7")
    assert code == 2 and "1+99" in out


def test_prepare_then_eval_json_matches_the_library(shared_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ml-100k"
    code, text = invoke(
        "data",
        "prepare",
        "--dataset",
        "ml-100k",
        "--source",
        str(shared_data_dir / "ml-100k"),
        "--out",
        str(out),
    )
    assert code == 0, text
    assert json.loads((out / "stats.json").read_text())["users"] == 943
    code, text = invoke(
        "eval",
        "--model",
        "popularity",
        "--data",
        str(out),
        "--protocol",
        "1+19",
        "--max-users",
        "300",
        "--json",
    )
    assert code == 0, text
    result = json.loads(text.strip().splitlines()[-1])
    assert {"ndcg@10", "ndcg@20", "hr@1", "hr@10", "hr@20", "mrr", "protocol", "n_users"} <= set(result)
    assert result["protocol"] == "1+19" and result["n_users"] == 300
    data = load_prepared(out)
    direct = evaluate(
        data, load_scorer("popularity", None, data, "cpu"), "1+19", max_users=300, progress=False
    )
    assert result["ndcg@10"] == pytest.approx(direct["ndcg@10"]) and result["hr@1"] == pytest.approx(
        direct["hr@1"]
    )


def test_eval_refuses_an_unknown_protocol(tmp_path: Path) -> None:
    code, out = invoke(
        "eval", "--model", "popularity", "--data", str(tmp_path), "--protocol", "2+2", "--json"
    )
    assert code == 2 and "2+2" in out


def test_export_bundle_and_verify_name_a_corrupted_file(tmp_path: Path) -> None:
    data = toy_processed(tmp_path / "data")
    write_sasrec(tmp_path / "sasrec")
    bundle = tmp_path / "bundle"
    code, out = invoke(
        "export", "bundle", "--data", str(data), "--sasrec", str(tmp_path / "sasrec"), "--out", str(bundle)
    )
    assert code == 0, out
    code, out = invoke("export", "verify", str(bundle))
    assert code == 0 and "ok: bundle" in out
    catalog = next(
        p for p in bundle.rglob("*") if p.is_file() and p.name != "manifest.json" and p.suffix == ".jsonl"
    )
    catalog.write_text(catalog.read_text() + "\n")
    code, out = invoke("export", "verify", str(bundle))
    assert code == 2 and catalog.name in out and "Traceback" not in out
