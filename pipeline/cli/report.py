"""`milestones report`: a thin wrapper over `pipeline.tools.report` (imported on use, so the
other commands do not load matplotlib)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli import AppContext, handle_errors, main, pass_app


@main.command("report")
@click.option("--run", "run_id", metavar="RUN_ID",
              help="Report on this run (default: the latest run that wrote files).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.html",
              help="Where to write the page (default: report-<run id>.html beside the database).")
@pass_app
@handle_errors
def report(app: AppContext, run_id: str | None, out: Path | None) -> None:
    """Write one self-contained HTML page with charts: achievement per group and window,
    streak lengths, rewards issued and revoked per run, leaderboard tops, the run's manifest.

    The page needs no network to open and prints its path.

    Example: milestones report --out nightly.html
    """
    from pipeline.tools.report import write_report

    click.echo(str(write_report(app.workspace, run_id=run_id, out=out)))
