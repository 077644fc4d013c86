"""`milestones`: the click group, shared options, and the one place errors become exit codes.

Each command module (groups, load, run, ...) is a thin wrapper: parse options, call one library
function, print the result.
"""

from __future__ import annotations

import functools
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pipeline.errors import MilestonesError
from pipeline.workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])


class AppContext:
    """What every command gets: the resolved workspace and the verbosity."""

    def __init__(self, db: str | None, config: str | None, verbose: bool, quiet: bool) -> None:
        self._db = db
        self._config = config
        self.verbose = verbose
        # Progress only on a terminal, never under cron.
        self.quiet = quiet or not sys.stderr.isatty()
        self._workspace: Workspace | None = None

    @property
    def workspace(self) -> Workspace:
        if self._workspace is None:
            self._workspace = Workspace.resolve(self._db, self._config)
        return self._workspace


class Terminated(SystemExit):
    """SIGTERM (a cron timeout, Airflow killing a task) unwinds the command like an error, so
    a run rolls back, is recorded FAILED and removes its scratch files; `bench` removes its
    workspace. Exit code 143, as a shell reports a SIGTERM."""

    message = (
        "stopped by SIGTERM; a run is all or nothing (rolled back and marked FAILED, or "
        "committed), so the same command can simply be run again"
    )

    def __init__(self) -> None:
        super().__init__(143)

    def __str__(self) -> str:
        return self.message


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated()


def handle_errors(fn: F) -> F:
    """Turn a `MilestonesError` into ``Error: ...`` and its exit code; traceback only with -v."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Terminated as exc:
            click.echo(f"Error: {exc.message}", err=True)
            sys.exit(exc.code)
        except MilestonesError as exc:
            ctx = click.get_current_context(silent=True)
            verbose = bool(ctx and isinstance(ctx.obj, AppContext) and ctx.obj.verbose)
            click.echo(f"Error: {exc.message}", err=True)
            if verbose:
                if exc.detail:
                    click.echo(exc.detail, err=True)
                click.echo("".join(traceback.format_exception(exc)), err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


pass_app = click.make_pass_decorator(AppContext)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    envvar="MILESTONES_DB",
    metavar="PATH",
    help="DuckDB workspace file (default ./milestones.duckdb).",
)
@click.option("--config", metavar="PATH", help="milestones.toml (default: next to the database).")
@click.option("-v", "--verbose", is_flag=True, help="Show details and tracebacks of errors.")
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress output (the default when not on a terminal)."
)
@click.version_option(package_name="milestones")
@click.pass_context
def main(
    ctx: click.Context, db: str | None, config: str | None, verbose: bool, quiet: bool
) -> None:
    """Score loyalty milestones, streaks, capping and leaderboards from exported data.

    Example: milestones demo
    """
    ctx.obj = AppContext(db, config, verbose, quiet)
    signal.signal(signal.SIGTERM, _terminate)


def _register() -> None:
    """Import every command module of this package; each registers its commands on `main`."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_register()
