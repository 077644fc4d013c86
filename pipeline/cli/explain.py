"""`milestones explain` and `milestones simulate`: thin wrappers over `pipeline.tools`.

Both open the database read-only: neither can change the ledger, the outputs or the run files.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import click

from pipeline.cli import AppContext, handle_errors, main, pass_app
from pipeline.tools import explain as explain_tool
from pipeline.tools import simulate as simulate_tool

_DATE = click.DateTime(formats=["%Y-%m-%d"])


def _day(value: datetime | None) -> date | None:
    return value.date() if value else None


@main.command("explain")
@click.argument("customer_id")
@click.option("--group", "group", required=True, metavar="NAME", help="The group to explain.")
@click.option("--window", metavar="K", help="Only this window: its number or refCode.")
@click.option("--as-of", type=_DATE, help="Explain as of this day (default: the latest run's).")
@click.option("--json", "as_json", is_flag=True, help="The explanation as one JSON document.")
@pass_app
@handle_errors
def explain(app: AppContext, customer_id: str, group: str, window: str | None,
            as_of: datetime | None, as_json: bool) -> None:
    """Why CUSTOMER_ID has or lost a reward: records counted and not, and each reward's history.

    Example: milestones explain 1004 --group streakTestt123
    """
    ws = app.workspace
    with ws.connect(read_only=True) as con:
        report = explain_tool.explain(con, customer_id, group, config=ws.config,
                                      as_of=_day(as_of), window=window)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in explain_tool.render(report):
            click.echo(line)


@main.command("simulate")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--as-of", type=_DATE, help="Score as of this day (default: yesterday).")
@click.option("--from", "from_", type=_DATE, help="Report windows overlapping --from..--to.")
@click.option("--to", type=_DATE, help="Last day of the range; scored as of this day.")
@click.option("--target-scale", "scales", metavar="S,S,...",
              help="Multiply target values by each scale, side by side (default 1).")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON document.")
@pass_app
@handle_errors
def simulate(app: AppContext, files: tuple[Path, ...], as_of: datetime | None,
             from_: datetime | None, to: datetime | None, scales: str | None,
             as_json: bool) -> None:
    """Backtest group files that are not registered on the loaded history; writes nothing.

    Exit 3 when some group could not be scored (e.g. its rule names a column no export has).

    Example: milestones simulate new_programme.json --target-scale 0.8,1.0,1.2
    """
    ws = app.workspace
    parsed = simulate_tool.parse_scales(scales)
    with ws.connect(read_only=True) as con:
        report = simulate_tool.simulate(con, list(files), config=ws.config, as_of=_day(as_of),
                                        from_date=_day(from_), to_date=_day(to), scales=parsed)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in simulate_tool.render(report):
            click.echo(line)
    simulate_tool.raise_for_failures(report)
