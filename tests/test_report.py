"""`milestones report`: one self-contained HTML page with a chart per section.

Most tests share one demo workspace (bundled samples: every group kind, two runs, a revocation),
built once per module; the rendering tests use small hand-made `ReportData`.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.demo import REPORT_NAME, run_demo
from pipeline.tools import report

IMG = re.compile(r'<img src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">')
# What an SVG names without fetching it: its XML namespaces and matplotlib's DTD line.
SVG_NAMESPACES = {
    "http://www.w3.org/2000/svg",
    "http://www.w3.org/1999/xlink",
    "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd",
}
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The bundled demo, built once: (workspace folder, summary lines)."""
    folder = tmp_path_factory.mktemp("report") / "milestones-demo"
    return folder, run_demo(folder)


@pytest.fixture(scope="module")
def page(demo: tuple[Path, list[str]]) -> str:
    return (demo[0] / REPORT_NAME).read_text(encoding="utf-8")


def _db(demo: tuple[Path, list[str]]) -> Path:
    return demo[0] / "milestones.duckdb"


def _query(demo: tuple[Path, list[str]], sql: str) -> list[tuple]:
    with duckdb.connect(str(_db(demo)), read_only=True) as con:
        return con.sql(sql).fetchall()


def _svgs(page: str) -> list[tuple[str, str]]:
    """(decoded SVG, alt text) of every chart image."""
    return [(base64.b64decode(b64).decode("utf-8"), alt) for b64, alt in IMG.findall(page)]


# ------------------------------------------------------------------------------- the demo page


def test_demo_ends_by_writing_the_report_and_printing_its_path(
    demo: tuple[Path, list[str]],
) -> None:
    folder, lines = demo
    assert lines[-1].startswith(f"  report: {folder / REPORT_NAME} ")
    assert (folder / REPORT_NAME).stat().st_size > 10_000


def test_every_chart_is_an_embedded_svg_image(demo: tuple[Path, list[str]], page: str) -> None:
    achievement_groups = _query(demo, "SELECT count(DISTINCT group_id) FROM achievement_rates "
                                      "JOIN target_groups USING (group_id) "
                                      "WHERE tracking_type <> 'CAPPING'")[0][0]
    streak_groups = _query(demo, "SELECT count(DISTINCT group_id) FROM streak_distribution")[0][0]
    leaderboard_windows = _query(demo, "SELECT count(*) FROM (SELECT DISTINCT group_id, "
                                       "target_id, period_index FROM leaderboard)")[0][0]
    capping = _query(demo, "SELECT count(DISTINCT (group_id, target_id)) FROM capping")[0][0]
    # The demo has each kind of chart; 1 = rewards per run.
    assert min(achievement_groups, streak_groups, leaderboard_windows, capping) >= 1
    expected = achievement_groups + streak_groups + 1 + leaderboard_windows + capping

    svgs = _svgs(page)
    assert len(svgs) == expected
    assert page.count("<img") == expected  # no image outside the pattern above
    for svg, alt in svgs:
        assert svg.startswith("<?xml") and "<svg" in svg
        assert svg.count("<path") > 10  # drawn: axes, bars and text as paths
        assert "<text" not in svg  # text drawn as paths: no font needed to open it
        assert alt  # a reader without images still gets the numbers


def test_the_page_fetches_nothing_from_elsewhere(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    for tag in ("<script", "<link", "<iframe", "@import", "url("):
        assert tag not in page.lower(), tag
    for svg, _ in _svgs(page):
        assert set(re.findall(r"https?://[^\s\"'<>)]+", svg)) <= SVG_NAMESPACES
        assert not re.search(r"href=\"(?!#)", svg), "an SVG links outside itself"
        assert "<image" not in svg


def test_the_page_names_what_a_manager_looks_for(demo: tuple[Path, list[str]], page: str) -> None:
    latest, first = (r[0] for r in _query(demo, "SELECT run_id FROM run_history"))
    # Achievement per group: every scored non-capping group is captioned.
    for (name,) in _query(demo, "SELECT DISTINCT group_name FROM achievement_rates "
                                "JOIN target_groups USING (group_id) "
                                "WHERE tracking_type <> 'CAPPING'"):
        assert f"<figcaption>{name} (" in page
    # The latest run is the default; its revocation is listed with its customer and window.
    assert f"<title>milestones report · run {latest}</title>" in page
    kind, name, customer, window = _query(
        demo, "SELECT kind, name, customer_id, coalesce(ref_code, '#' || period_index) "
              f"FROM rewards WHERE revoked_run_id = '{latest}'")[0]
    assert (f"<td>{kind}</td><td>{name}</td><td>{customer}</td><td>{window}</td>") in page
    # Both runs are on the rewards-per-run chart.
    assert first in page
    # The manifest: its files with their checksums, the rows read.
    manifest = report.read_manifest(Path(_query(
        demo, f"SELECT folder FROM run_outputs WHERE run_id = '{latest}'")[0][0]))
    assert manifest is not None
    for meta in manifest["files"].values():
        assert f"<td>{meta['sha256']}</td>" in page
    assert f"<td>transactions</td><td>{manifest['rows_in']['transactions']}</td>" in page
    assert "not the latest" not in page


def test_leaderboard_labels_are_the_exact_values(demo: tuple[Path, list[str]], page: str) -> None:
    rank1 = _query(demo, "SELECT customer_id, value FROM leaderboard_top10 WHERE rank = 1 "
                         "ORDER BY period_index DESC LIMIT 1")[0]
    alts = [alt for _, alt in _svgs(page) if alt.startswith("Top ")]
    assert any(f"#1 customer {rank1[0]} ({report._num(rank1[1])})" in a for a in alts)


# ------------------------------------------------------------------------------------ the CLI


def test_cli_report_of_an_older_run_says_the_charts_are_the_latest_state(
    demo: tuple[Path, list[str]], tmp_path: Path, runner: CliRunner
) -> None:
    latest, first = (r[0] for r in _query(demo, "SELECT run_id FROM run_history"))
    out = tmp_path / "first.html"
    result = runner.invoke(main, ["--db", str(_db(demo)), "report", "--run", first,
                                  "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output == f"{out}\n"
    page = out.read_text(encoding="utf-8")
    assert "which is not the latest" in page and f"latest run ({latest}) left" in page
    issued = _query(demo, f"SELECT awards FROM runs WHERE run_id = '{first}'")[0][0]
    assert issued > 0
    assert f'<div class="v">{issued}</div><div class="k">rewards issued</div>' in page
    assert "<h3>Run " + first + ": revoked</h3><p class=note>Nothing revoked.</p>" in page


def test_cli_report_defaults_to_a_file_beside_the_database(
    demo: tuple[Path, list[str]], tmp_path: Path, runner: CliRunner
) -> None:
    db = tmp_path / "copy.duckdb"
    shutil.copy(_db(demo), db)
    latest = _query(demo, "SELECT run_id FROM run_history LIMIT 1")[0][0]
    result = runner.invoke(main, ["--db", str(db), "report"])
    assert result.exit_code == 0, result.output
    assert result.output == f"{tmp_path / f'report-{latest}.html'}\n"
    assert (tmp_path / f"report-{latest}.html").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temp file, renamed


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param(["--run", "nope"], "Error: run 'nope' is not in this workspace (latest: ",
                     id="unknown run"),
        pytest.param(["--out", "/no/such/folder/r.html"],
                     "Error: folder /no/such/folder does not exist; create it first "
                     "(mkdir -p /no/such/folder) or choose another --out", id="missing folder"),
    ],
)
def test_cli_report_errors_say_what_to_do(
    demo: tuple[Path, list[str]], runner: CliRunner, args: list[str], error: str
) -> None:
    result = runner.invoke(main, ["--db", str(_db(demo)), "report", *args])
    assert result.exit_code == 1
    assert result.output.startswith(error)
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_cli_report_on_a_workspace_without_runs(db_path: Path, runner: CliRunner) -> None:
    assert runner.invoke(main, ["--db", str(db_path), "runs"]).exit_code == 0  # creates it
    result = runner.invoke(main, ["--db", str(db_path), "report"])
    assert result.exit_code == 1
    assert result.output == ("Error: this workspace has no runs yet; score with `milestones run` "
                             "first, then `milestones report`\n")


def test_cli_report_has_help_with_an_example(runner: CliRunner) -> None:
    result = runner.invoke(main, ["report", "--help"])
    assert result.exit_code == 0
    assert "Example: milestones report" in result.output


def test_other_commands_do_not_import_matplotlib() -> None:
    code = "import sys, pipeline.cli, pipeline.demo; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "False"


# ------------------------------------------------------------------------------- rendering


def _data(**changes: object) -> report.ReportData:
    """A one-run workspace with nothing scored, to render sections alone."""
    run = {"run_id": "R1", "status": "SUCCEEDED", "as_of": date(2026, 11, 22), "from_date": None,
           "to_date": None, "started_at": datetime(2026, 11, 23, tzinfo=UTC),
           "finished_at": datetime(2026, 11, 23, 0, 0, 3, tzinfo=UTC), "seconds": 3.0,
           "groups": 1, "awards": 0, "revocations": 0, "error": None, "folder": None}
    fields: dict[str, object] = {
        "run": run, "latest_run_id": "R1", "manifest": None, "manifest_path": None,
        "achievement": pl.DataFrame(), "streaks": pl.DataFrame(),
        "runs": pl.DataFrame({"run_id": ["R1"], "as_of": [date(2026, 11, 22)],
                              "status": ["SUCCEEDED"], "issued": [0], "revoked": [0]}),
        "issued": pl.DataFrame(), "revoked": pl.DataFrame(), "leaderboards": pl.DataFrame(),
        "capping": pl.DataFrame(), "standing": 0,
    }
    fields.update(changes)
    return report.ReportData(**fields)  # type: ignore[arg-type]


def test_empty_sections_say_so_instead_of_drawing_empty_charts() -> None:
    page = report.render(_data())
    assert "No group has been scored yet." in page
    assert "No STREAK group has been scored." in page
    assert "No leaderboard group has been scored." in page
    assert "<h2>Capping</h2>" not in page
    assert "No readable manifest at (the run wrote no files)." in page
    assert len(_svgs(page)) == 1  # the rewards-per-run chart only


def test_names_are_escaped_and_decimals_printed_exactly() -> None:
    board = pl.DataFrame({"group_name": ["<b>Top</b>"], "target_name": ["t"], "period_index": [1],
                          "ref_code": [None], "rank": [1], "customer_id": ["7"],
                          "value": [Decimal("1234.5000")]},
                         schema_overrides={"ref_code": pl.String, "value": pl.Decimal(38, 4)})
    page = report.render(_data(leaderboards=board))
    assert "<b>Top</b>" not in page and "&lt;b&gt;Top&lt;/b&gt;" in page
    assert "#1 customer 7 (1234.5)" in page


def test_the_same_data_renders_the_same_bytes() -> None:
    achievement = pl.DataFrame({
        "group_name": ["G", "G"], "tracking_type": ["DEFAULT"] * 2,
        "evaluation_type": ["CYCLIC_WINDOW"] * 2, "label": ["cycle 1", "cycle 2"],
        "status": ["ENDED", "RUNNING"], "customers": [4, 2], "achieved": [3, 0],
        "pct_achieved": [75.0, 0.0]})
    when = datetime(2026, 11, 23, tzinfo=UTC)
    first = report.render(_data(achievement=achievement), generated_at=when)
    assert first == report.render(_data(achievement=achievement), generated_at=when)
    assert "cycle 1 75.0%, cycle 2 0.0%" in first


# ------------------------------------------------------------------------- in a real browser


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium on this machine")
def test_headless_chromium_shows_the_charts(demo: tuple[Path, list[str]], tmp_path: Path) -> None:
    from PIL import Image  # pillow comes with matplotlib

    shot = tmp_path / "report.png"
    subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000",
         f"--screenshot={shot}", (demo[0] / REPORT_NAME).as_uri()],
        capture_output=True, timeout=120, check=True,
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50  # not a blank page
    # The bar colour is drawn only inside the SVG charts: the images were decoded and shown.
    bar = tuple(int(report.BLUE[i:i + 2], 16) for i in (1, 3, 5))
    assert sum(n for n, rgb in colours if rgb == bar) > 2000
