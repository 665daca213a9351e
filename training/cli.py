"""The offline command groups: `data`, `train`, `eval`, `export`. Commands are thin: parse, call, print."""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from training.cli_options import config_command, path_param
from training.common.errors import LLMRecError

console = Console(stderr=True)

data_app = typer.Typer(help="Download and prepare datasets.", no_args_is_help=True)
train_app = typer.Typer(help="Train models (SASRec, LLM-SRec, A-LLMRec).", no_args_is_help=True)
export_app = typer.Typer(help="Export and verify service bundles.", no_args_is_help=True)


def default_data_dir() -> Path:
    """Where raw datasets live: LLMREC_DATA_DIR, else ./data."""
    return Path(os.environ.get("LLMREC_DATA_DIR", "data"))


def fail(err: Exception) -> typer.Exit:
    console.print(f"[bold red]error:[/] {err}")
    return typer.Exit(code=2)


@data_app.command("download")
def data_download(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. ml-100k, ml-1m, amazon2014-beauty.")],
    dest: Annotated[Path | None, typer.Option(help="Target root (default: $LLMREC_DATA_DIR).")] = None,
) -> None:
    """Fetch a dataset's official files (checksums verified) into DEST/NAME."""
    from training.data.download import download_dataset

    try:
        path = download_dataset(name, dest or default_data_dir())
    except LLMRecError as err:
        raise fail(err) from None
    console.print(f"downloaded {name} → {path}")


def _load_data(path: Path):
    from training.data.dataset import load_prepared

    return load_prepared(path)


def _print_stats(stats: dict) -> None:
    table = Table("stat", "value")
    for key, value in stats.items():
        table.add_row(key, str(value))
    console.print(table)


def _register_prepare() -> None:
    from training.data.prepare import PrepareConfig, prepare_dataset

    def run(config: PrepareConfig, out: Path, source: Path | None) -> None:
        src = source or default_data_dir() / config.dataset
        try:
            path = prepare_dataset(config, src, out)
        except LLMRecError as err:
            raise fail(err) from None
        _print_stats(json.loads((path / "stats.json").read_text()))
        console.print(f"prepared {config.dataset} → {path}")

    data_app.command("prepare")(
        config_command(
            PrepareConfig,
            [
                path_param("out", "Output directory for the processed dataset."),
                path_param("source", "Raw files (default: $LLMREC_DATA_DIR/<dataset>).", default=None),
            ],
            run,
            "Build the processed dataset: catalog, chronological sequences, leave-one-out split, stats.",
        )
    )


def _register_train_sasrec() -> None:
    from training.common.distributed import is_main
    from training.sasrec.config import SASRecTrainConfig
    from training.sasrec.train import train_sasrec

    def run(config: SASRecTrainConfig, data: Path, out: Path) -> None:
        try:
            result = train_sasrec(_load_data(data), config, out)
        except LLMRecError as err:
            raise fail(err) from None
        if is_main():  # under torchrun: one summary, from rank 0
            console.print_json(json.dumps(result, default=str))

    train_app.command("sasrec")(
        config_command(
            SASRecTrainConfig,
            [path_param("data", "Processed dataset directory."), path_param("out", "Checkpoint directory.")],
            run,
            "Train SASRec (the CF-SRec teacher); keeps the best validation NDCG@10 epoch.",
        )
    )


def _register_train_llmsrec() -> None:
    from training.common.distributed import is_main
    from training.llmsrec.config import LLMSRecTrainConfig
    from training.llmsrec.train import train_llmsrec

    def run(config: LLMSRecTrainConfig, data: Path, sasrec: Path, out: Path) -> None:
        try:
            result = train_llmsrec(_load_data(data), sasrec, config, out)
        except LLMRecError as err:
            raise fail(err) from None
        if is_main():
            console.print_json(json.dumps(result, default=str))

    train_app.command("llmsrec")(
        config_command(
            LLMSRecTrainConfig,
            [
                path_param("data", "Processed dataset directory."),
                path_param("sasrec", "Trained SASRec checkpoint (the teacher)."),
                path_param("out", "Checkpoint directory."),
            ],
            run,
            "Train LLM-SRec: frozen LLM, soft tokens, distillation from SASRec. Only the MLPs train.",
        )
    )


def _register_train_allmrec() -> None:
    from training.allmrec.calibration import calibrate_checkpoint
    from training.allmrec.config import CalibrateConfig, Stage1TrainConfig, Stage2TrainConfig
    from training.allmrec.stage1 import train_stage1
    from training.allmrec.stage2 import train_stage2

    def run_stage1(config: Stage1TrainConfig, data: Path, sasrec: Path, out: Path) -> None:
        try:
            result = train_stage1(_load_data(data), sasrec, config, out)
        except LLMRecError as err:
            raise fail(err) from None
        console.print_json(json.dumps(result, default=str))

    def run_stage2(config: Stage2TrainConfig, data: Path, sasrec: Path, stage1: Path, out: Path) -> None:
        try:
            result = train_stage2(_load_data(data), sasrec, stage1, config, out)
        except LLMRecError as err:
            raise fail(err) from None
        console.print_json(json.dumps(result, default=str))

    data_p = path_param("data", "Processed dataset directory.")
    sasrec_p = path_param("sasrec", "Trained SASRec checkpoint.")
    out_p = path_param("out", "Checkpoint directory.")
    train_app.command("allmrec-stage1")(
        config_command(
            Stage1TrainConfig,
            [data_p, sasrec_p, out_p],
            run_stage1,
            "A-LLMRec stage 1: align frozen SASRec item embeddings with MiniLM text embeddings.",
        )
    )
    train_app.command("allmrec-stage2")(
        config_command(
            Stage2TrainConfig,
            [data_p, sasrec_p, path_param("stage1", "A-LLMRec stage-1 checkpoint."), out_p],
            run_stage2,
            "A-LLMRec stage 2: user/item soft tokens into a frozen LLM; LM loss on the target title.",
        )
    )

    def run_calibrate(config: CalibrateConfig, data: Path, stage2: Path) -> None:
        try:
            record = calibrate_checkpoint(
                stage2, _load_data(data), config.users, config.device, config.batch_size, config.cold
            )
        except LLMRecError as err:
            raise fail(err) from None
        summary = {k: record[k] for k in ("scoring", "valid", "sasrec")} | {"llm_only": record["llm_only"]}
        console.print_json(json.dumps(summary, default=str))

    train_app.command("allmrec-calibrate")(
        config_command(
            CalibrateConfig,
            [data_p, path_param("stage2", "A-LLMRec stage-2 checkpoint (its config.json is updated).")],
            run_calibrate,
            "A-LLMRec: choose the candidate scoring (sum | mean | PMI, blended with SASRec) on validation.",
        )
    )


def _register_train_allmrec_genre() -> None:
    from training.allmrec.config import GenreTrainConfig
    from training.allmrec.genre import train_allmrec_genre

    def run(
        config: GenreTrainConfig, data: Path, sasrec: Path, stage1: Path, out: Path, stage2: Path | None
    ) -> None:
        try:
            result = train_allmrec_genre(_load_data(data), sasrec, stage1, config, out, stage2_init=stage2)
        except LLMRecError as err:
            raise fail(err) from None
        console.print_json(json.dumps(result, default=str))

    train_app.command("allmrec-genre")(
        config_command(
            GenreTrainConfig,
            [
                path_param("data", "Processed dataset directory (with genres)."),
                path_param("sasrec", "Trained SASRec (the user vectors)."),
                path_param("stage1", "A-LLMRec stage-1 checkpoint (the item latents)."),
                path_param("out", "Checkpoint directory."),
                path_param("stage2", "Stage-2 checkpoint to start from (default: fresh).", default=None),
            ],
            run,
            "A-LLMRec favourite-genre prompt: train stage 2 to name the genres of the user's next item.",
        )
    )


def _register_export_bundle() -> None:
    from training.export import ExportConfig, export_bundle, verify_bundle_dir

    def run(
        config: ExportConfig,
        data: Path,
        sasrec: Path,
        out: Path,
        llmsrec: Path | None,
        allmrec: Path | None,
        allmrec_genre: Path | None,
    ) -> None:
        try:
            path = export_bundle(
                data,
                sasrec,
                llmsrec,
                out,
                include_llm=config.include_llm,
                overwrite=config.overwrite,
                allmrec_dir=allmrec,
                allmrec_genre_dir=allmrec_genre,
            )
            manifest = verify_bundle_dir(path)
        except LLMRecError as err:
            raise fail(err) from None
        console.print(f"bundle {manifest.bundle_version} ({', '.join(manifest.models)}) → {path}")

    export_app.command("bundle")(
        config_command(
            ExportConfig,
            [
                path_param("data", "Processed dataset directory."),
                path_param("sasrec", "Trained SASRec checkpoint."),
                path_param("out", "Bundle directory to write (atomically)."),
                path_param("llmsrec", "Trained LLM-SRec checkpoint.", default=None),
                path_param(
                    "allmrec",
                    "Trained A-LLMRec stage-2 checkpoint (for /v1/recommend model=allmrec).",
                    default=None,
                ),
                path_param(
                    "allmrec_genre",
                    "Trained A-LLMRec genre checkpoint (for /v1/explain/genre).",
                    default=None,
                ),
            ],
            run,
            "Write a service bundle: manifest with hashes and dims, weights, item table, catalog, LLM info.",
        )
    )


def _register_export_add_items() -> None:
    from training.add_items import AddItemsConfig, add_items
    from training.export import verify_bundle_dir

    def run(config: AddItemsConfig, bundle: Path, items: Path, out: Path) -> None:
        try:
            path = add_items(bundle, items, out, overwrite=config.overwrite, device=config.device)
            manifest = verify_bundle_dir(path)
        except LLMRecError as err:
            raise fail(err) from None
        ids = manifest.cold_items.ids if manifest.cold_items else ()
        span = f" (ids {ids[0]}..{ids[-1]})" if ids else ""
        console.print(f"bundle {manifest.bundle_version}: {len(ids)} cold item(s){span} → {path}")

    export_app.command("add-items")(
        config_command(
            AddItemsConfig,
            [
                path_param("bundle", "Bundle to extend (read only; it needs the allmrec part)."),
                path_param(
                    "items", 'JSONL, one item a line: {"item_id", "title", "genres": [...], "year"?}.'
                ),
                path_param("out", "New bundle directory to write (atomically)."),
            ],
            run,
            "Append cold items (title, genres, no interactions) to a copy of BUNDLE; A-LLMRec ranks them by "
            "text.",
        )
    )


@export_app.command("verify")
def export_verify_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
) -> None:
    """Check a bundle's files, hashes, shapes and configs; name every mismatch (exit 2 if any)."""
    from training.export import verify_bundle_dir

    try:
        manifest = verify_bundle_dir(bundle)
    except LLMRecError as err:
        raise fail(err) from None
    console.print(f"ok: bundle {manifest.bundle_version} ({', '.join(manifest.models)}) at {bundle}")


def build_eval_command() -> Callable[..., None]:
    """`llmrec eval` (mounted on the root command): flags from EvalConfig, plus the paths and --json."""
    from training.evaluation.protocol import EvalConfig, evaluate
    from training.scorers import load_scorer

    def run(config: EvalConfig, data: Path, ckpt: Path | None, as_json: bool) -> None:
        try:
            dataset = _load_data(data)
            scorer = load_scorer(config.model, ckpt, dataset, config.device)
            result = evaluate(
                dataset,
                scorer,
                config.protocol,
                split=config.split,
                seed=config.seed,
                max_users=config.max_users,
                shuffle=config.shuffle,
                progress=not as_json,
            )
        except LLMRecError as err:
            raise fail(err) from None
        extra = getattr(scorer, "extra_metrics", None)  # e.g. A-LLMRec generation's no-match rate
        result = {"model": config.model, **result, **(extra() if callable(extra) else {})}
        if as_json:
            typer.echo(json.dumps(result))
        else:
            _print_stats(result)

    as_json = inspect.Parameter(
        "as_json",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[bool, typer.Option("--json", help="Print one JSON object.")],
    )
    return config_command(
        EvalConfig,
        [
            path_param("data", "Processed dataset directory."),
            path_param("ckpt", "Checkpoint directory (not for popularity).", default=None),
            as_json,
        ],
        run,
        "Score a model on the shared leave-one-out candidates; prints NDCG@10/20, HR@1/10/20, MRR.",
    )


def build_apps() -> list[tuple[str, typer.Typer]]:
    """The groups to mount on the root `llmrec` command."""
    logging.basicConfig(
        level=os.environ.get("LLMREC_LOG_LEVEL", "INFO").upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    for register in (
        _register_prepare,
        _register_train_sasrec,
        _register_train_llmsrec,
        _register_train_allmrec,
        _register_train_allmrec_genre,
        _register_export_bundle,
        _register_export_add_items,
    ):
        register()
    return [("data", data_app), ("train", train_app), ("export", export_app)]
