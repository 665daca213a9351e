"""Typer commands whose flags are generated from a frozen config dataclass (one flag per field)."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console

from training.common.errors import LLMRecError


def _option_for(name: str, hint: Any, help_text: str | None) -> tuple[Any, typer.models.OptionInfo]:
    """Map a dataclass field type to a (python type, typer option) pair."""
    flag = "--" + name.replace("_", "-")
    origin = typing.get_origin(hint)
    if origin is typing.Literal:  # typer shows and checks the choices itself
        return hint, typer.Option(flag, help=help_text)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _option_for(name, args[0], help_text)
    if hint is bool:
        return bool, typer.Option(f"{flag}/--no-{flag[2:]}", help=help_text)
    return hint, typer.Option(flag, help=help_text)


def config_params(config_cls: type) -> list[inspect.Parameter]:
    """One keyword-only typer parameter per dataclass field, defaulting to the field's default."""
    hints = typing.get_type_hints(config_cls)
    params = []
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = ...
        py_type, option = _option_for(f.name, hints[f.name], f.metadata.get("help"))
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[py_type, option]
            )
        )
    return params


def config_command(
    config_cls: type, fixed: list[inspect.Parameter], run: Callable[..., None], doc: str
) -> Callable[..., None]:
    """Build a typer command: the `fixed` parameters, then the config's flags; `run(config, **fixed)`."""
    fixed_names = [p.name for p in fixed]
    hints = typing.get_type_hints(config_cls)

    def command(**kwargs: Any) -> None:
        fixed_values = {name: kwargs.pop(name) for name in fixed_names}
        for name, value in kwargs.items():
            if typing.get_origin(hints[name]) is tuple and isinstance(value, list):
                kwargs[name] = tuple(value)
        try:
            config = config_cls(**kwargs)
        except (LLMRecError, ValueError) as err:  # a flag value the config refuses
            Console(stderr=True).print(f"[bold red]error:[/] {err}")
            raise typer.Exit(code=2) from None
        run(config, **fixed_values)

    command.__signature__ = inspect.Signature(fixed + config_params(config_cls))  # type: ignore[attr-defined]
    command.__doc__ = doc
    return command


def path_param(name: str, help_text: str, *, default: Any = ..., exists: bool = False) -> inspect.Parameter:
    from pathlib import Path

    option = typer.Option("--" + name.replace("_", "-"), help=help_text, exists=exists)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[Path, option]
    )
