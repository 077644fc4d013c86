"""`milestones groups ...`: register and inspect target groups (thin wrappers over the registry)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from pipeline import registry
from pipeline.cli import AppContext, handle_errors, main, pass_app
from pipeline.definitions.envelope import to_json
from pipeline.definitions.parse import read_bodies
from pipeline.errors import DefinitionError
from pipeline.workspace import connect

_AS_OF = click.option(
    "--as-of",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Compute periodStatus as of this date (YYYY-MM-DD; default today in the group's zone).",
)
_FILES = click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))


def _workspace_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Accept `--db` / `--config` after the command too (`groups create x.json --db w.duckdb`):
    given there, they replace the ones given before the command."""

    @click.option("--config", "sub_config", metavar="PATH",
                  help="Same as `milestones --config`, accepted after the command.")
    @click.option("--db", "sub_db", metavar="PATH",
                  help="Same as `milestones --db`, accepted after the command.")
    @functools.wraps(fn)
    def wrapper(*args: Any, sub_db: str | None, sub_config: str | None, **kwargs: Any) -> Any:
        if sub_db or sub_config:
            ctx = click.get_current_context()
            root = ctx.find_root()
            app = ctx.find_object(AppContext)
            ctx.obj = AppContext(
                sub_db or root.params.get("db"),
                sub_config or root.params.get("config"),
                bool(app and app.verbose),
                bool(app and app.quiet),
            )
        return fn(*args, **kwargs)

    return wrapper


@main.group("groups")
def groups() -> None:
    """Register and inspect target groups (POST v3/targetGroups bodies).

    Example: milestones groups create data/groups/*.json
    """


@groups.command("create")
@_FILES
@_AS_OF
@_workspace_options
@pass_app
@handle_errors
def create(app: AppContext, files: Sequence[Path], as_of: datetime | None) -> None:
    """Validate and register the groups in FILE... and print one envelope per group.

    A file holds one group or a list; good groups are registered even when others in the
    same file fail (exit 1 then).

    Example: milestones groups create data/groups/monthly_spend_streak.json
    """
    bodies = _read(files)
    with app.workspace.connect() as con:
        outcomes = registry.register_bodies(
            con, bodies, config=app.workspace.config, as_of=_day(as_of)
        )
    _report(outcomes, done="registered", failed="were not registered")


@groups.command("validate")
@_FILES
@_AS_OF
@_workspace_options
@pass_app
@handle_errors
def validate(app: AppContext, files: Sequence[Path], as_of: datetime | None) -> None:
    """Check the groups in FILE... without registering them; prints their envelopes.

    Example: milestones groups validate my_group.json
    """
    bodies = _read(files)
    ws = app.workspace
    # Check names against the workspace when it exists; never create one just to validate.
    con = connect(ws.db_path, read_only=True) if ws.db_path.exists() else connect(":memory:")
    try:
        outcomes = registry.validate_bodies(con, bodies, config=ws.config, as_of=_day(as_of))
    finally:
        con.close()
    _report(outcomes, done="valid", failed="are not valid")


@groups.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per group.")
@_workspace_options
@pass_app
@handle_errors
def list_(app: AppContext, as_json: bool) -> None:
    """List the registered groups.

    Example: milestones groups list
    """
    with app.workspace.connect(read_only=True) as con:
        rows = registry.list_groups(con)
    if as_json:
        for row in rows:
            click.echo(to_json({k: _plain(v) for k, v in row.items()}, indent=None))
        return
    if not rows:
        click.echo("no groups registered yet; register one with `milestones groups create FILE`")
        return
    header = ("id", "name", "tracking", "evaluation", "periods", "targets", "active")
    table = [header] + [
        (str(r["group_id"]), r["name"], r["tracking_type"], r["evaluation_type"],
         str(r["periods"]), str(r["targets"]), "yes" if r["active"] else "no")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


@groups.command("show")
@click.argument("group")
@_AS_OF
@_workspace_options
@pass_app
@handle_errors
def show(app: AppContext, group: str, as_of: datetime | None) -> None:
    """Print the envelope of a registered group, by NAME or ID.

    Example: milestones groups show streakTestt123 --as-of 2023-11-18
    """
    with app.workspace.connect(read_only=True) as con:
        env = registry.show_group(con, group, config=app.workspace.config, as_of=_day(as_of))
    click.echo(to_json(env))


@groups.command("deactivate")
@click.argument("name")
@_workspace_options
@pass_app
@handle_errors
def deactivate(app: AppContext, name: str) -> None:
    """Stop scoring a group; its definition, ids and outputs stay.

    Example: milestones groups deactivate "Summer streak"
    """
    with app.workspace.connect() as con:
        gid, stored_name, was_active = registry.deactivate_group(con, name)
    if was_active:
        click.echo(f"deactivated group {stored_name!r} (id {gid}); runs no longer score it")
    else:
        click.echo(f"group {stored_name!r} (id {gid}) was already inactive")


def _read(files: Sequence[Path]) -> list[tuple[str, Any]]:
    """Every body of every file; any unreadable file stops the command before anything is
    registered."""
    return [item for path in files for item in read_bodies(path)]


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (date, datetime)) else value


def _report(outcomes: list[registry.Outcome], *, done: str, failed: str) -> None:
    """Print the envelopes, a one-line summary, and fail (exit 1) when any group had errors."""
    for outcome in outcomes:
        click.echo(to_json(outcome.envelope))
    bad = [o for o in outcomes if not o.ok]
    good = len(outcomes) - len(bad)
    click.echo(f"{good} of {len(outcomes)} group(s) {done}", err=True)
    if bad:
        which = ", ".join(
            f"{o.source} ({o.parsed.name!r}: {len(o.parsed.errors)} error(s))" for o in bad
        )
        raise DefinitionError(
            f"{len(bad)} group(s) had errors and {failed}: "
            f"{which}; fix them (see the errors in their envelopes) and run the command again "
            "for those groups",
            [p for o in bad for p in o.envelope["errors"] or []],
        )
