"""`milestones report`: one self-contained HTML page a programme manager reads at a glance.

Three steps, each testable alone: `collect` queries the analyst views into a `ReportData`,
`render` turns it into HTML with its charts inlined, `write_report` does both and writes the file.

Charts are matplotlib figures saved as SVG (text drawn as paths, so no font is needed) and
inlined as ``data:`` URIs in ``<img>`` tags: the page needs no network, no JavaScript, and
prints sharply. matplotlib is imported only when a chart is drawn, so the other commands do not
pay for it.

The tables hold one state, the one the latest run left. `--run` picks whose manifest and reward
events the page shows; achievement, streaks and leaderboards are always that current state, and
the page says so when the chosen run is not the latest.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl

from pipeline.errors import InputError
from pipeline.rewards.files import read_manifest

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from pipeline.workspace import Workspace

RUNS_SHOWN = 30  # the rewards-per-run chart: the latest runs only
WINDOWS_SHOWN = 36  # achievement per group: the latest windows only (a DAILY group has hundreds)
LEADERBOARD_WINDOWS = 2  # per leaderboard: the latest window and the one before (final)
EVENTS_LISTED = 100  # revocations of the chosen run listed one by one
CYCLES = ("CYCLIC_WINDOW", "PERIOD_AGNOSTIC_WINDOW")
SVG_METADATA = ("Date", "Creator", "Type", "Format")  # matplotlib's defaults, all left out

# Colours a reader tells apart in print and with the common colour-vision deficiencies.
BLUE, LIGHT_BLUE, GREEN, RED, GREY = "#1f5fa8", "#9dbde3", "#2e8b57", "#c0392b", "#7f7f7f"


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, as frames and plain values (no DuckDB handle)."""

    run: dict[str, Any]  # the chosen run's `run_history` row
    latest_run_id: str  # the run whose state the tables hold
    manifest: dict[str, Any] | None  # the chosen run's manifest.json, None when unreadable
    manifest_path: Path | None
    achievement: pl.DataFrame  # per group and window: label, status, customers, achieved, pct
    streaks: pl.DataFrame  # per STREAK group and length: customers_current, customers_longest
    runs: pl.DataFrame  # the latest runs, oldest first: run_id, as_of, status, issued, revoked
    issued: pl.DataFrame  # the chosen run's issues per group, kind and name
    revoked: pl.DataFrame  # the chosen run's revocations, one row each
    leaderboards: pl.DataFrame  # top 10 of the latest windows of each leaderboard
    capping: pl.DataFrame  # per CAPPING group and window: customers capped, allowed, excess
    standing: int  # rewards ISSUED in the ledger now


# ------------------------------------------------------------------------------------ queries


def collect(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> ReportData:
    """Query the views for the page.

    Args:
        run_id: the run to report on; default the latest run that wrote files (else the latest).

    Raises:
        InputError: no run yet, or `run_id` is not a run of this workspace.
    """
    history = con.sql("SELECT * FROM run_history").pl()  # newest first
    if history.is_empty():
        raise InputError("this workspace has no runs yet; score with `milestones run` first, "
                         "then `milestones report`")
    if run_id is None:
        with_files = history.filter(pl.col("folder").is_not_null())
        run = (with_files if not with_files.is_empty() else history).row(0, named=True)
    else:
        chosen = history.filter(pl.col("run_id") == run_id)
        if chosen.is_empty():
            latest = ", ".join(history["run_id"].head(3))
            raise InputError(f"run {run_id!r} is not in this workspace (latest: {latest}); "
                             "`milestones runs` lists the run ids")
        run = chosen.row(0, named=True)
    manifest_path = Path(run["folder"]) / "manifest.json" if run["folder"] else None
    manifest = read_manifest(manifest_path.parent) if manifest_path else None
    return ReportData(
        run=run,
        latest_run_id=history["run_id"][0],
        manifest=manifest,
        manifest_path=manifest_path,
        achievement=_achievement(con),
        streaks=con.sql(
            "SELECT group_name, length, customers_current, customers_longest "
            "FROM streak_distribution ORDER BY group_name, length"
        ).pl(),
        runs=_runs(con),
        issued=con.sql(
            "SELECT group_name, kind, name, count(*) AS rewards FROM reward_history "
            "WHERE run_id = $r AND action = 'ISSUED' GROUP BY ALL ORDER BY group_name, kind, name",
            params={"r": run["run_id"]},
        ).pl(),
        revoked=con.sql(
            "SELECT group_name, kind, name, CAST(customer_id AS VARCHAR) AS customer_id, "
            "coalesce(ref_code, '#' || period_index) AS window FROM reward_history "
            "WHERE run_id = $r AND action = 'REVOKED' ORDER BY ALL",
            params={"r": run["run_id"]},
        ).pl(),
        leaderboards=_leaderboards(con),
        capping=con.sql(
            "SELECT group_name, target_id, period_index, customers, customers_capped, allowed, "
            "excess FROM capping_summary ORDER BY group_name, target_id, period_index"
        ).pl(),
        standing=int(con.sql(
            "SELECT count(*) FROM rewards WHERE status = 'ISSUED'").fetchall()[0][0]),
    )


def _achievement(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Achievement per group and window, with a label a manager recognises (refCode, month or
    cycle); CAPPING groups are left out (they have their own section)."""
    frame = con.sql(
        "SELECT a.group_name, g.tracking_type, g.evaluation_type, a.period_index, a.ref_code, "
        "a.window_start, a.status, a.customers, a.achieved, a.pct_achieved "
        "FROM achievement_rates AS a JOIN target_groups AS g USING (group_id) "
        "WHERE g.tracking_type <> 'CAPPING' ORDER BY a.group_name, a.period_index"
    ).pl()
    cycle = pl.col("evaluation_type").is_in(CYCLES)
    return frame.with_columns(
        pl.coalesce(
            "ref_code",
            pl.when(cycle).then(pl.format("cycle {}", "period_index")),
            pl.col("window_start").dt.strftime("%Y-%m-%d"),
        ).alias("label")
    )


def _runs(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return con.sql(
        "SELECT run_id, as_of, from_date, to_date, status, coalesce(awards, 0) AS issued, "
        "coalesce(revocations, 0) AS revoked FROM (SELECT * FROM run_history LIMIT $n) "
        "ORDER BY started_at",
        params={"n": RUNS_SHOWN},
    ).pl()


def _leaderboards(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return con.sql(
        "WITH latest AS (SELECT group_id, target_name, period_index, dense_rank() OVER ("
        "  PARTITION BY group_id, target_name ORDER BY period_index DESC) AS back "
        "  FROM (SELECT DISTINCT group_id, target_name, period_index FROM leaderboard_top10)) "
        "SELECT t.group_name, t.target_name, t.period_index, t.ref_code, t.rank, "
        "CAST(t.customer_id AS VARCHAR) AS customer_id, t.value "
        "FROM leaderboard_top10 AS t JOIN latest AS l USING (group_id, target_name, period_index) "
        "WHERE l.back <= $k ORDER BY t.group_name, t.target_name, t.period_index DESC, t.rank",
        params={"k": LEADERBOARD_WINDOWS},
    ).pl()


# ------------------------------------------------------------------------------------- charts


@contextmanager
def _figure(width: float, height: float) -> Iterator[tuple[Figure, Axes]]:
    """A figure with one axes, outside pyplot (no global state, no GUI backend)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    yield fig, ax


def _svg_uri(fig: Figure) -> str:
    """The figure as a base64 ``data:`` URI of an SVG whose text is drawn as paths.

    A fixed hash salt and no metadata (date, creator URL) make the same data give the same
    bytes, and leave no URL but the XML namespaces in the SVG.
    """
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "milestones"}), \
            warnings.catch_warnings():
        # A group name in a script DejaVu Sans lacks draws boxes; the page is still useful.
        warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
        fig.savefig(buf, format="svg", metadata=dict.fromkeys(SVG_METADATA))
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _short(text: str, n: int = 28) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def achievement_chart(group: pl.DataFrame) -> str:
    """Bars of % achieved per window of one group; running windows light, with achieved/total."""
    from matplotlib.patches import Patch
    from matplotlib.ticker import PercentFormatter

    rows = group.tail(WINDOWS_SHOWN)
    width = max(4.0, min(11.0, 1.2 + 0.42 * rows.height))
    with _figure(width, 2.8) as (fig, ax):
        x = list(range(rows.height))
        pct = [float(p or 0) for p in rows["pct_achieved"]]
        colours = [LIGHT_BLUE if s == "RUNNING" else BLUE for s in rows["status"]]
        bars = ax.bar(x, pct, color=colours, edgecolor=BLUE, linewidth=0.6)
        if rows.height <= 16:
            labels = [f"{a}/{c}" for a, c in zip(rows["achieved"], rows["customers"], strict=True)]
            ax.bar_label(bars, labels=labels, padding=2, fontsize=7, color="#333333")
        labels = [_short(str(v), 12) for v in rows["label"]]
        # Upright labels while they fit side by side (about 12 characters an inch at 8 pt).
        tilt = sum(len(v) + 2 for v in labels) > 12 * (width - 1)
        ax.set_xticks(x, labels, fontsize=8,
                      rotation=45 if tilt else 0, ha="right" if tilt else "center")
        ax.set_ylim(0, 110)  # head room for the bar labels
        ax.set_yticks([0, 25, 50, 75, 100])
        ax.yaxis.set_major_formatter(PercentFormatter(100))
        ax.set_ylabel("customers achieving", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        if "RUNNING" in rows["status"].to_list():
            ax.legend(handles=[Patch(color=BLUE, label="ended"),
                               Patch(color=LIGHT_BLUE, label="running")],
                      fontsize=7, loc="lower right", bbox_to_anchor=(1, 1), frameon=False,
                      ncols=2)  # above the axes: never over a bar
        return _svg_uri(fig)


def streak_chart(group: pl.DataFrame) -> str:
    """Customers per streak length: current count beside longest count."""
    lengths = group["length"].to_list()
    with _figure(max(4.0, min(10.0, 1.5 + 0.5 * len(lengths))), 2.8) as (fig, ax):
        x = list(range(len(lengths)))
        ax.bar([i - 0.2 for i in x], group["customers_current"].to_list(), width=0.4,
               color=BLUE, label="current streak")
        ax.bar([i + 0.2 for i in x], group["customers_longest"].to_list(), width=0.4,
               color=GREEN, label="longest streak")
        ax.set_xticks(x, [str(n) for n in lengths], fontsize=8)
        ax.set_xlabel("streak length (windows in a row)", fontsize=8)
        ax.set_ylabel("customers", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, frameon=False)
        return _svg_uri(fig)


def runs_chart(runs: pl.DataFrame, chosen: str) -> str:
    """Rewards issued (up) and revoked (down) per run, the chosen run outlined."""
    with _figure(max(5.0, min(11.0, 2.0 + 0.45 * runs.height)), 3.0) as (fig, ax):
        x = list(range(runs.height))
        edge = ["black" if r == chosen else "none" for r in runs["run_id"]]
        up = ax.bar(x, runs["issued"].to_list(), width=0.6, color=GREEN, edgecolor=edge,
                    linewidth=1.2, label="issued")
        down = ax.bar(x, [-v for v in runs["revoked"].to_list()], width=0.6, color=RED,
                      edgecolor=edge, linewidth=1.2, label="revoked")
        if runs.height <= 16:
            ax.bar_label(up, labels=[str(v or "") for v in runs["issued"]], padding=2, fontsize=7)
            ax.bar_label(down, labels=[str(v or "") for v in runs["revoked"]], padding=2,
                         fontsize=7)
        ax.set_xlim(-0.7, max(runs.height, 4) - 0.3)  # a few runs do not make slabs
        ax.margins(y=0.15)
        ax.axhline(0, color=GREY, linewidth=0.6)
        labels = [f"{r['as_of']}\n{r['run_id'][-4:]}" + ("" if r["status"] == "SUCCEEDED"
                                                          else f"\n{r['status']}")
                  for r in runs.iter_rows(named=True)]
        ax.set_xticks(x, labels, fontsize=7, rotation=0 if runs.height <= 8 else 60)
        ax.set_ylabel("rewards", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, frameon=False, loc="best")
        return _svg_uri(fig)


def leaderboard_chart(board: pl.DataFrame) -> str:
    """Horizontal bars of the top 10 of one leaderboard window, rank 1 on top."""
    with _figure(4.2, 0.6 + 0.28 * board.height) as (fig, ax):
        y = list(range(board.height))
        # Plotting needs floats; the labels carry the exact decimals.
        ax.barh(y, [float(v) for v in board["value"]], color=BLUE)
        ax.set_yticks(y, [f"#{r}  {c}" for r, c in zip(board["rank"], board["customer_id"],
                                                       strict=True)], fontsize=8)
        ax.invert_yaxis()
        ax.bar_label(ax.containers[0], labels=[_num(v) for v in board["value"]], padding=3,
                     fontsize=7)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel("value", fontsize=8)
        ax.margins(x=0.15)
        return _svg_uri(fig)


def capping_chart(group: pl.DataFrame) -> str:
    """Points allowed under the cap and points cut, stacked per window."""
    with _figure(max(4.0, min(10.0, 1.5 + 0.5 * group.height)), 2.8) as (fig, ax):
        x = list(range(group.height))
        allowed = [float(v or 0) for v in group["allowed"]]
        ax.bar(x, allowed, color=BLUE, label="allowed")
        ax.bar(x, [float(v or 0) for v in group["excess"]], bottom=allowed, color=RED,
               label="cut by the cap")
        ax.set_xticks(x, [f"#{p}" for p in group["period_index"]], fontsize=8)
        ax.set_ylabel("points", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.legend(fontsize=7, frameon=False)
        return _svg_uri(fig)


# --------------------------------------------------------------------------------------- HTML


def _num(value: Any) -> str:
    """Decimals without trailing zeros (``3.0000`` -> ``3``), everything else as text."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return "" if value is None else str(value)


def _e(value: Any) -> str:
    return html.escape(_num(value))


def _table(frame: pl.DataFrame, headers: Sequence[str] | None = None) -> str:
    heads = headers or frame.columns
    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>"
                   for row in frame.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure_html(uri: str, alt: str, caption: str) -> str:
    return (f'<figure><img src="{uri}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _tiles(data: ReportData) -> str:
    run = data.run
    span = f"{run['from_date']} … {run['to_date']}" if run["from_date"] else f"as of {run['as_of']}"
    tiles = [("run status", run["status"]), ("scope", span), ("groups", run["groups"]),
             ("rewards issued", run["awards"] or 0), ("rewards revoked", run["revocations"] or 0),
             ("rewards standing now", data.standing)]
    return '<div class="tiles">' + "".join(
        f'<div class="tile"><div class="v">{_e(v)}</div><div class="k">{html.escape(k)}</div></div>'
        for k, v in tiles) + "</div>"


def _achievement_section(data: ReportData) -> str:
    out = ["<h2>Achievement rate per group and window</h2>"]
    if data.achievement.is_empty():
        return out[0] + "<p class=note>No group has been scored yet.</p>"
    out.append("<p class=note>Share of the scored customers who achieved each window (all "
               "targets, or the UNIFIED combination). Labels: achieved / customers.</p>")
    out.append('<div class="grid">')
    for (name,), group in data.achievement.group_by("group_name", maintain_order=True):
        kind = f"{group['tracking_type'][0]}, {group['evaluation_type'][0]}"
        dropped = max(0, group.height - WINDOWS_SHOWN)
        caption = f"{name} ({kind})" + (f"; the latest {WINDOWS_SHOWN} of {group.height} windows"
                                        if dropped else "")
        alt = f"Achievement rate per window of {name}: " + ", ".join(
            f"{lbl} {_num(p)}%" for lbl, p in zip(group["label"], group["pct_achieved"],
                                                  strict=True))
        out.append(_figure_html(achievement_chart(group), alt, caption))
    out.append("</div>")
    table = data.achievement.select("group_name", "label", "status", "customers", "achieved",
                                    "pct_achieved")
    out.append("<details><summary>The numbers</summary>"
               + _table(table, ["group", "window", "status", "customers", "achieved", "%"])
               + "</details>")
    return "".join(out)


def _streak_section(data: ReportData) -> str:
    out = ["<h2>Streak length distribution</h2>"]
    if data.streaks.is_empty():
        return out[0] + "<p class=note>No STREAK group has been scored.</p>"
    out.append('<div class="grid">')
    for (name,), group in data.streaks.group_by("group_name", maintain_order=True):
        alt = f"Customers per streak length in {name}: " + ", ".join(
            f"length {n}: {c} current, {lo} longest" for n, c, lo in group.select(
                "length", "customers_current", "customers_longest").iter_rows())
        out.append(_figure_html(streak_chart(group), alt, str(name)))
    out.append("</div>")
    return "".join(out)


def _runs_section(data: ReportData) -> str:
    chosen = data.run["run_id"]
    out = ["<h2>Rewards issued and revoked per run</h2>"]
    alt = "Rewards per run: " + "; ".join(
        f"{r['run_id']} issued {r['issued']}, revoked {r['revoked']}"
        for r in data.runs.iter_rows(named=True))
    out.append(_figure_html(runs_chart(data.runs, chosen), alt,
                            f"The latest {data.runs.height} runs, oldest left; the run of this "
                            "report is outlined."))
    out.append(f"<h3>Run {html.escape(chosen)}: issued</h3>")
    out.append(_table(data.issued, ["group", "kind", "name", "rewards"])
               if not data.issued.is_empty() else "<p class=note>Nothing issued.</p>")
    out.append(f"<h3>Run {html.escape(chosen)}: revoked</h3>")
    if data.revoked.is_empty():
        out.append("<p class=note>Nothing revoked.</p>")
    else:
        more = data.revoked.height - EVENTS_LISTED
        out.append(_table(data.revoked.head(EVENTS_LISTED),
                          ["group", "kind", "name", "customer", "window"]))
        if more > 0:
            out.append(f"<p class=note>… and {more} more: SELECT * FROM reward_history WHERE "
                       f"run_id = '{html.escape(chosen)}' AND action = 'REVOKED'</p>")
    return "".join(out)


def _leaderboard_section(data: ReportData) -> str:
    out = ["<h2>Leaderboard tops</h2>"]
    if data.leaderboards.is_empty():
        return out[0] + "<p class=note>No leaderboard group has been scored.</p>"
    out.append('<div class="grid">')
    keys = ["group_name", "target_name", "period_index"]
    for (group, target, index), board in data.leaderboards.group_by(keys, maintain_order=True):
        window = board["ref_code"][0] or f"#{index}"
        alt = f"Top {board.height} of {group}, window {window}: " + ", ".join(
            f"#{r} customer {c} ({_num(v)})" for r, c, v in board.select(
                "rank", "customer_id", "value").iter_rows())
        out.append(_figure_html(leaderboard_chart(board), alt,
                                f"{group} · {_short(str(target), 40)} · window {window}"))
    out.append("</div>")
    return "".join(out)


def _capping_section(data: ReportData) -> str:
    if data.capping.is_empty():
        return ""
    out = ["<h2>Capping</h2>", '<div class="grid">']
    for (name, target), group in data.capping.group_by(["group_name", "target_id"],
                                                       maintain_order=True):
        alt = f"Points allowed and cut per window of {name}: " + ", ".join(
            f"#{p}: {_num(a)} allowed, {_num(x)} cut, {c} of {n} customers capped"
            for p, a, x, c, n in group.select("period_index", "allowed", "excess",
                                              "customers_capped", "customers").iter_rows())
        out.append(_figure_html(capping_chart(group), alt, f"{name} (target {target})"))
    out.append("</div>")
    return "".join(out)


def _manifest_section(data: ReportData) -> str:
    out = ["<h2>Run manifest</h2>"]
    run = data.run
    facts = pl.DataFrame({
        "": ["run id", "status", "as of", "range", "started", "finished", "seconds", "files",
             "error"],
        "value": [run["run_id"], run["status"], str(run["as_of"]),
                  f"{run['from_date']} … {run['to_date']}" if run["from_date"] else "",
                  str(run["started_at"]), str(run["finished_at"] or ""),
                  f"{float(run['seconds'] or 0):.1f}", run["folder"] or "(no files)",
                  run["error"] or ""],
    })
    out.append(_table(facts))
    manifest = data.manifest
    if manifest is None:
        where = data.manifest_path or "(the run wrote no files)"
        out.append(f"<p class=note>No readable manifest at {html.escape(str(where))}.</p>")
        return "".join(out)
    if manifest.get("failed_groups"):
        failed = pl.DataFrame({"group": list(manifest["failed_groups"]),
                               "error": [str(v) for v in manifest["failed_groups"].values()]})
        out.append("<h3>Failed groups</h3>" + _table(failed))
    out.append('<div class="cols">')
    for key, title in (("rows_in", "Rows in"), ("rows_out", "Rows out")):
        counts = manifest.get(key) or {}
        out.append(f"<div><h3>{title}</h3>" + _table(pl.DataFrame(
            {"table": list(counts), "rows": [str(v) for v in counts.values()]},
            schema={"table": pl.String, "rows": pl.String})) + "</div>")
    out.append("</div>")
    files = manifest.get("files") or {}
    out.append("<h3>Files</h3>" + _table(pl.DataFrame(
        {"file": list(files),
         "rows": [str(m.get("rows", "")) for m in files.values()],
         "bytes": [str(m.get("bytes", "")) for m in files.values()],
         "sha256": [str(m.get("sha256", "")) for m in files.values()]},
        schema={"file": pl.String, "rows": pl.String, "bytes": pl.String, "sha256": pl.String})))
    out.append(f"<details><summary>{html.escape(str(data.manifest_path))}</summary><pre>"
               + html.escape(json.dumps(manifest, indent=2, default=str)) + "</pre></details>")
    return "".join(out)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
  margin:0 auto;max-width:1180px;padding:24px;color:#1d1d1f;background:#fff;line-height:1.4}
h1{font-size:1.6em;margin:0 0 4px}
h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:1em;margin:18px 0 6px}.note{color:#555;font-size:.92em}
.banner{background:#fff4d6;border:1px solid #e0b84c;padding:8px 12px;border-radius:6px}
.tiles{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.tile{border:1px solid #ddd;border-radius:8px;padding:10px 16px;min-width:130px}
.tile .v{font-size:1.5em;font-weight:600}.tile .k{color:#555;font-size:.85em}
.grid{display:flex;flex-wrap:wrap;gap:16px}.cols{display:flex;flex-wrap:wrap;gap:32px}
figure{margin:0;border:1px solid #eee;border-radius:8px;padding:8px;break-inside:avoid}
figure img{display:block;max-width:100%;height:auto}
figcaption{font-size:.9em;color:#333;margin-top:4px;width:0;min-width:100%}
table{border-collapse:collapse;font-size:.85em;margin:4px 0}
th,td{border-bottom:1px solid #eee;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f6f6f6}td{font-variant-numeric:tabular-nums;word-break:break-all}
details{margin:8px 0}pre{font-size:.8em;background:#f8f8f8;padding:8px;overflow:auto}
@media print{body{padding:0}details{display:none}h2{break-after:avoid}}
"""


def render(data: ReportData, *, generated_at: datetime | None = None) -> str:
    """The whole page: no external URL, no script, every chart an inline SVG image."""
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    run_id = data.run["run_id"]
    banner = ""
    if run_id != data.latest_run_id:
        banner = (f'<p class="banner">This report is about run {html.escape(run_id)}, which is not '
                  f"the latest. Its manifest and reward events are shown; achievement, streaks, "
                  f"leaderboards and capping are the state the latest run "
                  f"({html.escape(data.latest_run_id)}) left.</p>")
    sections = [_achievement_section(data), _streak_section(data), _runs_section(data),
                _leaderboard_section(data), _capping_section(data), _manifest_section(data)]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>milestones report · run {html.escape(run_id)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>milestones report</h1><p class=note>Run {html.escape(run_id)} · generated {when} · "
        "achievement, streaks, leaderboards and capping as the latest run left them.</p>"
        f"{banner}{_tiles(data)}{''.join(sections)}</body></html>\n"
    )


# -------------------------------------------------------------------------------------- write


def default_path(workspace: Workspace, run_id: str) -> Path:
    """``report-<run id>.html`` beside the database: one file per run, nothing overwritten."""
    return workspace.db_path.parent / f"report-{run_id}.html"


def write_report(workspace: Workspace, run_id: str | None = None, out: Path | None = None
                 ) -> Path:
    """Collect, render and write the page atomically (a reader never sees half a file).

    Raises:
        InputError: no runs, an unknown run, or an `out` that cannot be written.
    """
    with workspace.connect(read_only=True) as con:
        data = collect(con, run_id)
    path = out or default_path(workspace, data.run["run_id"])
    if path.is_dir():
        raise InputError(f"--out {path} is a folder; give a file name such as {path}/report.html")
    if not path.parent.is_dir():
        raise InputError(f"folder {path.parent} does not exist; create it first "
                         f"(mkdir -p {path.parent}) or choose another --out")
    page = render(data)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path

