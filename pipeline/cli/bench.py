"""`milestones generate` and `milestones bench`: thin wrappers over `pipeline.tools.generate`
and `pipeline.tools.bench`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli import AppContext, handle_errors, main, pass_app


@main.command("generate")
@click.option("--customers", type=click.IntRange(min=1), required=True, metavar="N",
              help="How many customers.")
@click.option("--days", type=click.IntRange(28, 3000), default=365, show_default=True,
              metavar="D", help="How many days of history, from 2025-01-01.")
@click.option("--seed", type=int, default=1, show_default=True, metavar="S",
              help="The same seed gives the same files.")
@click.option("--transactions", type=click.IntRange(min=10), metavar="M",
              help="Transactions in all (default: about 20 a customer a year).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("synthetic"),
              show_default=True, help="Folder for the files.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet",
              show_default=True, help="File format of the exports.")
@pass_app
@handle_errors
def generate(app: AppContext, customers: int, days: int, seed: int, transactions: int | None,
             out: Path, fmt: str) -> None:
    """Write synthetic exports of every kind and a programme of groups (groups/*.json).

    The folder also gets a milestones.toml (leaderboards on, for the programme) and prints the
    commands that load, register and run it.

    Example: milestones generate --customers 50000 --days 365 --seed 7 --out synthetic
    """
    from pipeline.tools import generate as gen

    say = None if app.quiet else (lambda msg: click.echo(msg, err=True))
    options = gen.Options(customers=customers, days=days, seed=seed, transactions=transactions)
    for line in gen.describe(gen.generate(options, out, fmt=fmt, progress=say)):
        click.echo(line)


@main.command("bench")
@click.option("--transactions", type=click.IntRange(min=100), default=1_000_000,
              show_default=True, metavar="M", help="Transactions to generate.")
@click.option("--customers", type=click.IntRange(min=1), metavar="N",
              help="Customers (default: transactions / 20).")
@click.option("--days", type=click.IntRange(28, 3000), default=365, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--groups", "groups", multiple=True, metavar="NAME",
              help="Only these programme groups (repeatable; name or file name; default all).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path),
              help="Generate into this folder, or reuse what an earlier bench or generate "
                   "with the same options left there.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the bench workspace (database and run files) in this folder.")
@click.option("--reference-share", type=click.FloatRange(0, 1), default=0.01,
              show_default=True, help="Share of customers the reference evaluator scores.")
@click.option("--per-group", is_flag=True, help="Also time each group scored alone.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object of the figures.")
@pass_app
@handle_errors
def bench(app: AppContext, transactions: int, customers: int | None, days: int, seed: int,
          groups: tuple[str, ...], data: Path | None, keep: Path | None,
          reference_share: float, per_group: bool, as_json: bool) -> None:
    """Generate, load, run, and time the same inputs' bare floor and baselines side by side.

    Uses its own workspace (never --db). Progress goes to stderr on a terminal.

    Example: milestones bench --transactions 1000000 --json
    """
    from pipeline.tools import bench as b

    say = None if app.quiet else (lambda msg: click.echo(msg, err=True))
    options = b.BenchOptions(transactions=transactions, customers=customers, days=days,
                             seed=seed, groups=groups, data=data, keep=keep,
                             reference_share=reference_share, per_group=per_group)
    result = b.run_bench(options, progress=say)
    if as_json:
        click.echo(json.dumps(b.json_figures(result), indent=2, default=str))
    else:
        for line in b.render(result):
            click.echo(line)
