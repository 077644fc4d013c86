"""`milestones load KIND PATH...`: a thin wrapper over `pipeline.loading.load_exports`."""

from __future__ import annotations

import click

from pipeline.cli import AppContext, handle_errors, main, pass_app
from pipeline.loading import KINDS, describe, load_exports


@main.command("load")
@click.argument("kind", type=click.Choice(list(KINDS), case_sensitive=False))
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@pass_app
@handle_errors
def load(app: AppContext, kind: str, paths: tuple[str, ...]) -> None:
    """Load export files (CSV, Parquet, JSON lines; globs allowed) of one KIND.

    Example: milestones load transactions 'exports/transactions_*.csv'
    """
    progress = None if app.quiet else (lambda msg: click.echo(msg, err=True))
    with app.workspace.connect() as con:
        report = load_exports(
            con, kind, paths, timezone=app.workspace.config.timezone, progress=progress
        )
    for line in describe(report):
        click.echo(line)
