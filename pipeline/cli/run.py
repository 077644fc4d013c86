"""`milestones run`, `runs`, `progress` and `demo`: thin wrappers over `pipeline.runs`,
`pipeline.progress` and `pipeline.demo`."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import click

from pipeline import progress as progress_report
from pipeline import runs
from pipeline.cli import AppContext, handle_errors, main, pass_app
from pipeline.config import OUTPUT_FORMATS
from pipeline.engines import ENGINES, make_engine

_DATE = click.DateTime(formats=["%Y-%m-%d"])


def _day(value: datetime | None) -> date | None:
    return value.date() if value else None


@main.command("run")
@click.option("--as-of", type=_DATE,
              help="Score as of this day (default: yesterday in org.timezone).")
@click.option("--from", "from_", type=_DATE, help="Rescore windows overlapping --from..--to.")
@click.option("--to", type=_DATE, help="Last day of the range; the run is as of this day.")
@click.option("--group", "groups", multiple=True, metavar="NAME",
              help="Only this group (repeatable; default every active group).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the run files (default output.dir).")
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS),
              help="Run file format (default output.format).")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
              help="local: in this process; dask: sharded by customer over a Dask cluster.")
@click.option("--scheduler", metavar="ADDRESS",
              help="Dask scheduler (tcp://host:8786) for --engine dask; default: a local "
                   "cluster of 2 workers.")
@pass_app
@handle_errors
def run(app: AppContext, as_of: datetime | None, from_: datetime | None, to: datetime | None,
        groups: tuple[str, ...], out: Path | None, fmt: str | None, engine: str,
        scheduler: str | None) -> None:
    """Score, update the reward ledger and write the run files, all or nothing.

    Exit 3 when some groups failed (the others are committed), 4 when another run holds the
    database.

    Example: milestones run --from 2026-11-01 --to 2026-11-22 --group "Monthly spend streak"
    """
    request = runs.RunRequest(as_of=_day(as_of), from_date=_day(from_), to_date=_day(to),
                              groups=groups, out_dir=out, fmt=fmt)
    say = None if app.quiet else (lambda msg: click.echo(msg, err=True))
    scorer = make_engine(engine, scheduler=scheduler, progress=say,
                         workdir=app.workspace.db_path.resolve().parent if scheduler else None)
    outcome = runs.run(app.workspace, request, progress=say, engine=scorer)
    for line in runs.describe(outcome):
        click.echo(line)
    outcome.raise_for_failures()


@main.command("runs")
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run.")
@pass_app
@handle_errors
def runs_(app: AppContext, limit: int, as_json: bool) -> None:
    """The run history: status, dates, counts, duration, error and files of each run.

    Example: milestones runs --limit 5
    """
    with app.workspace.connect() as con:
        frame = runs.history(con, limit)
    if as_json:
        for row in frame.iter_rows(named=True):
            click.echo(json.dumps(row, default=str))
    elif frame.is_empty():
        click.echo("no runs yet; start one with `milestones run`")
    else:
        for r in frame.iter_rows(named=True):
            span = f"{r['from_date']}..{r['to_date']}" if r["from_date"] else f"as of {r['as_of']}"
            click.echo(f"{r['run_id']}  {r['status']:<9} {span}  {r['awards'] or 0} issued, "
                       f"{r['revocations'] or 0} revoked, {float(r['seconds'] or 0):.1f}s")
            if r["error"]:
                click.echo(f"    error: {r['error']}")


@main.command("progress")
@click.argument("customer_id")
@click.option("--group", "groups", multiple=True, metavar="NAME",
              help="Only this group (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON document.")
@pass_app
@handle_errors
def progress(app: AppContext, customer_id: str, groups: tuple[str, ...], as_json: bool) -> None:
    """Where CUSTOMER_ID stands in every group: windows, values vs targets, streak, rewards.

    Example: milestones progress 1001 --group "Monthly spend streak"
    """
    with app.workspace.connect() as con:
        report = progress_report.customer_progress(con, customer_id, groups)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in progress_report.render(report):
            click.echo(line)


@main.command("demo")
@pass_app
@handle_errors
def demo(app: AppContext) -> None:
    """Load the bundled samples into ./milestones-demo/, register, run, print a summary.

    Example: milestones demo
    """
    from pipeline.demo import run_demo

    for line in run_demo(Path.cwd() / "milestones-demo"):
        click.echo(line)
