"""The `llmrec` command: mounts the offline groups (training) and the service commands (app)."""

from __future__ import annotations

import typer


def build_cli() -> typer.Typer:
    from training.cli import build_apps, build_eval_command

    cli = typer.Typer(
        help="llmrec: LLM-based sequential recommenders (LLM-SRec, A-LLMRec) and the service around them.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    for name, group in build_apps():
        cli.add_typer(group, name=name)
    cli.command("eval")(build_eval_command())
    try:
        from app.cli import register_service_commands
    except ImportError:  # the service extra is not installed
        pass
    else:
        register_service_commands(cli)
    return cli


def main() -> None:
    build_cli()()


if __name__ == "__main__":
    main()
