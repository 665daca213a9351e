"""`llmrec serve --bundle DIR [--host --port]`: run the service under uvicorn; every other setting comes
from LLMREC_* environment variables (see app.settings.Settings). Load benchmark: bench/serve_bench.py."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer


def register_service_commands(cli: typer.Typer) -> None:
    """Add the service commands to the root `llmrec` typer app."""

    @cli.command("serve")
    def serve(
        bundle: Path = typer.Option(..., "--bundle", help="Bundle directory (llmrec export bundle)."),
        host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 to expose it)."),
        port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    ) -> None:
        """Serve /v1/recommend and friends; the try-it page at /, OpenAPI docs at /docs."""
        level = os.environ.get("LLMREC_LOG_LEVEL", "INFO").upper()
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        if level != "DEBUG":  # before faiss is imported: its loader logs each CPU build it could not load
            logging.getLogger("faiss.loader").setLevel(logging.WARNING)
        import uvicorn
        from pydantic import ValidationError

        from app.errors import StartupError
        from app.main import create_app
        from app.settings import Settings

        try:
            app = create_app(Settings(bundle=bundle))
        except ValidationError as err:
            typer.echo(f"error: invalid LLMREC_* setting:\n{err}", err=True)
            raise typer.Exit(2) from None
        except StartupError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None
        typer.echo(
            f"serving on http://{host}:{port} (a page to try it: /, API docs: /docs; Ctrl-C stops). Try:\n"
            f"  curl -s -X POST http://{host}:{port}/v1/recommend -H 'content-type: application/json' "
            '-d \'{"history": [1, 2, 3], "k": 5}\''
        )
        uvicorn.run(app, host=host, port=port, log_level=level.lower(), access_log=False)
