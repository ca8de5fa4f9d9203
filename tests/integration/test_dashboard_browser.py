"""The dashboard in a real headless browser (Debian's Chromium), served by the real command.

``billing dashboard`` runs as a child process over an embedded chdb directory this test filled
(then closed: one process per chdb directory), with a token, on a free loopback port. Chromium
opens an account page with ``?token=``, so the cookie path is exercised by a real browser too,
then prints the DOM (the account's figures must be in it) and takes a screenshot, which must be a
PNG with a drawn page: many colours, and the chart's line across the chart card.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from dashboard.pages import account_href
from dashboard.report import dollars
from devkit.stack.install import apt_install
from tests.dashboard_support import (
    SUSPENDED_ACCOUNT,
    SUSPENDED_AT,
    Expected,
    dashboard_process,
    fetch,
    populate,
)
from tests.test_sink_samples import chdb_with_tables

pytestmark = pytest.mark.integration

TOKEN = "browser-test-token-0123456789"
WIDTH, HEIGHT = 1280, 1600
LINE_BLUE = (0x3D, 0x7D, 0xD8)  # dashboard.report's chart colour
BROWSER_SECONDS = 90


def chromium() -> str:
    """Debian's chromium, installed with apt when missing."""
    found = shutil.which("chromium")
    if found is None:
        apt_install("chromium")
        found = shutil.which("chromium")
    assert found, "chromium not on PATH after apt-get install chromium"
    return found


@pytest.fixture(scope="module")
def filled_chdb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Expected]]:
    directory = tmp_path_factory.mktemp("dashboard-browser") / "chdb"
    with chdb_with_tables(directory) as writer:
        expected = populate(writer)
    return directory, expected


@pytest.fixture(scope="module")
def dashboard_url(filled_chdb: tuple[Path, dict[str, Expected]],
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``billing dashboard`` on a free port, until the module ends."""
    directory, _ = filled_chdb
    log_path = tmp_path_factory.mktemp("dashboard-log") / "dashboard.log"
    with dashboard_process(directory, log_path, TOKEN) as (base, _):
        yield base
    assert TOKEN not in log_path.read_text()


def run_chromium(profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
         *arguments],
        capture_output=True, text=True, timeout=BROWSER_SECONDS, check=False)


def blue_pixels(image: Image.Image, top: int) -> list[tuple[int, int]]:
    """(x, y) of the pixels in the chart line's colour below ``top`` (above it: the header's
    search button is the same blue)."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    pixels = rgb.load()
    return [(x, y) for y in range(top, height, 2) for x in range(0, width, 2)
            if all(abs(a - b) <= 12 for a, b in zip(pixels[x, y], LINE_BLUE, strict=True))]


def test_account_page_in_chromium(dashboard_url: str, filled_chdb: tuple[Path,
                                                                         dict[str, Expected]],
                                  tmp_path: Path) -> None:
    _, expected = filled_chdb
    # The biggest spender: enterprise, no budget, so the only blue below the header is the chart.
    account_id = max(expected, key=lambda key: expected[key].lifetime_spend)
    figures = expected[account_id]
    url = f"{dashboard_url}{account_href(account_id)}?token={TOKEN}"

    dom = run_chromium(tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for text in (f"Account {account_id}", dollars(figures.net_balance),
                 dollars(figures.lifetime_spend), f"{figures.rpm_limit:,} requests/min",
                 "Spend per day", "<polyline", "Account events"):
        assert text in dom.stdout, text

    screenshot = tmp_path / "account.png"
    shot = run_chromium(tmp_path / "profile-shot", f"--screenshot={screenshot}", url)
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(screenshot) as image:
        assert image.size == (WIDTH, HEIGHT)
        colours = image.convert("RGB").getcolors(maxcolors=WIDTH * HEIGHT)
        assert colours is not None and len(colours) > 200, "a nearly blank page"
        assert min(ImageStat.Stat(image.convert("L")).stddev) > 10
        line = blue_pixels(image, top=120)
    xs = [x for x, _ in line]
    assert len(line) > 300, "no chart line drawn"
    assert max(xs) - min(xs) > WIDTH // 2, "the chart line does not cross the chart"


def test_without_the_token_chromium_gets_401(dashboard_url: str, tmp_path: Path) -> None:
    assert fetch(dashboard_url + "/").status == 401
    dom = run_chromium(tmp_path / "profile", "--dump-dom", dashboard_url + "/")
    assert "Token required" in dom.stdout


BANNER_RED = (0xFD, 0xE2, 0xE1)  # the "bad" verdict's background: the banner, the status badge
SHADE_RED = (0xF8, 0xE1, 0xE1)  # the chart's suspended shading (red at 16 % over white)


def colour_rows(image: Image.Image, colour: tuple[int, int, int], top: int = 0,
                tolerance: int = 3) -> dict[int, int]:
    """y -> how many pixels of that row (from ``top``) are ``colour``."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    pixels = rgb.load()
    rows: dict[int, int] = {}
    for y in range(top, height):
        count = sum(1 for x in range(width)
                    if all(abs(a - b) <= tolerance for a, b in zip(pixels[x, y], colour,
                                                                   strict=True)))
        if count:
            rows[y] = count
    return rows


def bands(rows: dict[int, int]) -> list[tuple[int, int]]:
    """Runs of consecutive y: (first, last)."""
    found: list[tuple[int, int]] = []
    for y in sorted(rows):
        if found and y == found[-1][1] + 1:
            found[-1] = (found[-1][0], y)
        else:
            found.append((y, y))
    return found


def page_in_chromium(url: str, tmp_path: Path, name: str) -> tuple[str, Image.Image]:
    """The DOM Chromium built and its screenshot of ``url``."""
    dom = run_chromium(tmp_path / f"profile-{name}-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    screenshot = tmp_path / f"{name}.png"
    shot = run_chromium(tmp_path / f"profile-{name}-shot", f"--screenshot={screenshot}", url)
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    with Image.open(screenshot) as image:
        image.load()
        return dom.stdout, image


def test_suspended_list_in_chromium(dashboard_url: str, filled_chdb: tuple[Path,
                                                                           dict[str, Expected]],
                                    tmp_path: Path) -> None:
    _, expected = filled_chdb
    suspended = sorted(a for a, figures in expected.items() if figures.status == "suspended")
    dom, image = page_in_chromium(f"{dashboard_url}/accounts?status=suspended&token={TOKEN}",
                                  tmp_path, "list")
    assert "<h1>Suspended accounts</h1>" in dom
    assert f"1 to {len(suspended)} of {len(suspended)} accounts" in dom
    for account_id in suspended:
        assert f'<a href="{account_href(account_id)}">{account_id}</a>' in dom
    # One red "suspended; paused: credits_exhausted" badge per row, one row under the other.
    badges = bands(colour_rows(image, BANNER_RED))
    assert len(badges) == len(suspended), badges


def test_suspended_account_in_chromium(dashboard_url: str, tmp_path: Path) -> None:
    dom, image = page_in_chromium(
        f"{dashboard_url}{account_href(SUSPENDED_ACCOUNT)}?token={TOKEN}", tmp_path, "account")
    since = f"{SUSPENDED_AT:%Y-%m-%d %H:%M} UTC"
    assert (f"Cannot send: suspended (free_credit_exhausted) since {since}; paused: "
            f"credits_exhausted since {since}") in dom
    assert 'class="shade-suspended"' in dom and "partial day" in dom
    # The banner: a wide red band right under the title (the badge beside the title is short).
    red = colour_rows(image, BANNER_RED)
    banner = [band for band in bands(red) if band[1] - band[0] >= 20 and
              max(red[y] for y in range(band[0], band[1] + 1)) > WIDTH // 2]
    assert banner and banner[0][0] < 200, bands(red)
    # The chart: shaded red from the suspension to the end of the data, a tall block.
    shade = colour_rows(image, SHADE_RED, top=banner[0][1] + 1, tolerance=2)
    assert any(last - first > 100 for first, last in bands(shade)), bands(shade)
