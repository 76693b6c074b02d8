"""What every command shares: overrides after the options, one-line errors, progress lines, field listings."""

from __future__ import annotations

import functools

import typer

from coldstart.config import ConfigError, describe
from coldstart.data.schema import DataError

# A job's command takes its config's fields as --key value after its own options.
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}


def friendly_errors(fn):
    """Bad input ends with one line naming what is wrong and exit code 2, not a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (DataError, ConfigError) as exc:
            typer.secho(f"error: {exc}", err=True, fg="red")
            raise typer.Exit(2) from None
    return wrapper


def progress(message: str) -> None:
    typer.echo(f"[coldstart] {message}")


def print_fields(cls) -> None:
    """Every field of a job's config, as --help-fields lists them."""
    for option, default, text in describe(cls):
        typer.echo(f"  {option:28s} {text} [default: {default}]")
