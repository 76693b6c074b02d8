"""`coldstart train NAME` for every model with a trainer in `coldstart.registry`: YAML plus --key value
overrides, then the trainer's driver.

The trainer (a layer above the core) is named by its entry's import path and imported only when its command
runs, so listing the commands imports neither it nor torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from coldstart import registry
from coldstart.commands.common import OVERRIDES, friendly_errors, print_fields
from coldstart.config import load_config


def add_model_commands(train_app: typer.Typer) -> None:
    """A command in `train_app` per registered model with a trainer, in the registry's order."""
    for spec in registry.trained():
        add_model_command(train_app, spec)


def add_model_command(train_app: typer.Typer, spec: registry.ModelSpec) -> None:
    @train_app.command(spec.name, context_settings=OVERRIDES, help=f"{spec.about} (Ray Train). {spec.usage}".strip())
    @friendly_errors
    def command(
        ctx: typer.Context,
        config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config; --key value overrides it.")] = None,
    ):
        cls = spec.config_class()
        if "--help-fields" in ctx.args:
            print_fields(cls)
            return
        result = spec.trainer_module().run(load_config(cls, config, ctx.args))
        for row in result.history:
            typer.echo("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        typer.echo(f"{spec.name}: best epoch {result.best['epoch']}, artifact {result.out} ({result.seconds:.0f} s)")
