"""The dashboard in a real headless Chromium against a real 3-node cluster (issue 17).

Skipped when Chromium, its driver or selenium is missing, unless LEEKY_REQUIRE_BROWSER
is set (``.ci/run`` installs them and sets it).
Screenshots and the measured leader-kill-to-page time are kept in the folder the
tests print (``LEEKY_DASHBOARD_ARTIFACTS`` if set, else a pytest tmp folder).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leeky_twisted.ops.localcluster import LocalCluster, NodeProcess, jsonrpc

pytestmark = pytest.mark.integration

#: .ci/run sets it when it installed Chromium: then a missing piece fails, never skips
REQUIRED = bool(os.environ.get("LEEKY_REQUIRE_BROWSER"))
if not REQUIRED:
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium import webdriver  # noqa: E402

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not (CHROMIUM and os.path.exists(CHROMEDRIVER)) and not REQUIRED:
    pytest.skip("chromium and chromedriver are not installed", allow_module_level=True)

FAST = ["--tick", "0.02", "--heartbeat", "0.06", "--election-timeout", "0.3"]
#: the page must show a new leader within this many seconds of the kill
KILL_DEADLINE = 8.0


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(
        os.environ.get("LEEKY_DASHBOARD_ARTIFACTS") or tmp_path_factory.mktemp("dashboard")
    )
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard test artifacts in {folder}")
    return folder


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "c3", nodes=3, extra_args=FAST)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, what: str, check: Any, timeout: float = 15.0) -> Any:
    """Poll ``check(driver)`` until truthy (selenium's wait: a deadline, no fixed sleep)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(check, f"waiting for {what}")


def page_leader(driver: Any) -> tuple[str, int]:
    got = driver.execute_script(
        "const e = document.querySelector('#leader'); return [e.textContent, +e.dataset.term];"
    )
    return str(got[0]), int(got[1])


def member_rows(driver: Any) -> dict[str, str]:
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#members tbody tr')]"
        ".map(r => [r.dataset.member, r.dataset.role]);"
    )
    return {str(m): str(r) for m, r in rows}


def lag_of(driver: Any, node_id: str) -> int | None:
    text = driver.execute_script(
        "const c = document.querySelector(`#members tr[data-member='${arguments[0]}'] td.lag`);"
        "return c ? c.textContent : null;",
        node_id,
    )
    return int(text) if text and text.isdigit() else None


def severe_console_entries(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def open_page(driver: Any, node: NodeProcess, fragment: str = "") -> None:
    driver.get(f"http://127.0.0.1:{node.http_port}/{fragment}")
    wait(driver, "the live stream", lambda d: d.find_element("id", "live").text == "live")


def test_page_shows_three_members_and_the_leader_without_console_errors(
    cluster: LocalCluster, browser: Any, artifacts: Path
) -> None:
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    for i in range(30):  # some traffic for the charts
        jsonrpc(leader.http_port, "put", f"k{i}", f"v{i}")
    open_page(browser, follower)
    wait(browser, "the leader on the page", lambda d: page_leader(d)[0] == leader.node_id)

    def three_up(d: Any) -> dict[str, str] | None:
        rows = member_rows(d)
        return rows if len(rows) == 3 and "down" not in rows.values() else None

    rows = wait(browser, "three reachable members", three_up)
    assert rows[leader.node_id] == "leader"
    assert sorted(rows) == sorted(n.node_id for n in cluster.nodes)
    wait(
        browser,
        "a leader event",
        lambda d: d.find_elements("css selector", "#timeline li[data-kind=leader]"),
    )
    charted = "const d = chartData(); return d.length >= 6 && d.some(q => q.p50 !== null)"
    for i in range(5000):  # a bounded write load, for the charts
        jsonrpc(leader.http_port, "put", f"chart{i % 50}", f"v{i}")
        if i % 20 == 0 and browser.execute_script(charted):
            break
    assert browser.execute_script(charted), "the charts got no points"
    browser.save_screenshot(str(artifacts / "dashboard.png"))

    browser.find_element("id", "tab-ring").click()
    wait(
        browser,
        "message dots in the ring",
        lambda d: d.find_elements("css selector", "#dots circle[data-kind]"),
    )
    assert len(browser.find_elements("css selector", "#ring g.node")) == 3
    browser.save_screenshot(str(artifacts / "consensus.png"))
    browser.find_element("id", "pause").click()
    assert browser.find_element("id", "pause").text == "Resume"
    assert severe_console_entries(browser) == []


def test_leader_kill_shows_a_new_leader_and_the_election(
    cluster: LocalCluster, browser: Any, artifacts: Path
) -> None:
    leader = cluster.wait_for_leader()
    watcher = next(n for n in cluster.nodes if n is not leader)
    open_page(browser, watcher)
    wait(browser, "the leader on the page", lambda d: page_leader(d)[0] == leader.node_id)
    _, old_term = page_leader(browser)

    start = time.monotonic()
    cluster.kill(leader, signal.SIGKILL)
    killed = time.monotonic()

    def new_leader(d: Any) -> Any:
        who, term = page_leader(d)
        if who in ("none", leader.node_id) or term <= old_term:
            return None
        events = d.find_elements(
            "css selector", f"#timeline li[data-kind=leader][data-term='{term}']"
        )
        return (who, term) if events else None

    who, term = wait(browser, "a new leader and its election", new_leader, KILL_DEADLINE)
    shown = time.monotonic() - killed
    wait(
        browser, "the killed leader shown down", lambda d: member_rows(d)[leader.node_id] == "down"
    )
    down = time.monotonic() - killed
    print(f"\nleader {leader.node_id} killed: the page shows leader {who} (term {term})")
    print(f"after {shown:.2f} s, and the old leader down after {down:.2f} s")
    (artifacts / "leader_kill_to_page_seconds.txt").write_text(f"{shown:.3f} {down:.3f}\n")
    assert time.monotonic() - start < KILL_DEADLINE + 15
    assert member_rows(browser)[who] == "leader"
    assert severe_console_entries(browser) == []


def test_paused_follower_lag_grows_then_shrinks(cluster: LocalCluster, browser: Any) -> None:
    leader = cluster.wait_for_leader()
    slow, watcher = [n for n in cluster.nodes if n is not leader]
    open_page(browser, watcher)
    wait(browser, "three members", lambda d: len(member_rows(d)) == 3)
    writes = iter(range(3000))  # the whole test writes at most this many entries

    def write_until(what: str, check: Any) -> Any:
        for i in writes:
            jsonrpc(leader.http_port, "put", f"lag{i}", "x" * 32)
            value = check(browser)
            if value:
                return value
        raise AssertionError(f"{what}: not seen within the bounded write load")

    assert slow.proc is not None
    slow.proc.send_signal(signal.SIGSTOP)
    try:
        grown = write_until(
            "the paused follower's lag growing",
            lambda d: (lag_of(d, slow.node_id) or 0) > 50 and lag_of(d, slow.node_id),
        )
    finally:
        slow.proc.send_signal(signal.SIGCONT)
    wait(
        browser,
        "the lag shrinking",
        lambda d: (lag := lag_of(d, slow.node_id)) is not None and lag < grown // 2,
        20.0,
    )
    assert severe_console_entries(browser) == []
