"""The executor's start command: options, the service, the twistd plugin."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage

from leeky_twisted.defaults import DATA_DIR_CHECK_SECONDS
from leeky_twisted.executor.store import FolderLostError
from leeky_twisted.executor.tap import ExecutorService, Options, main, makeService


def test_options_need_a_data_dir_and_a_valid_port(tmp_path: Path) -> None:
    """--data-dir is required; --port must be a TCP port."""
    with pytest.raises(usage.UsageError):
        Options().parseOptions([])
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--data-dir", str(tmp_path), "--port", "70000"])
    opts = Options()
    opts.parseOptions(["--data-dir", str(tmp_path), "--port", "0"])
    assert (opts["port"], opts["host"]) == (0, "127.0.0.1")


def test_main_exits_with_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad command line exits with status 2 and says why."""
    with pytest.raises(SystemExit) as info:
        main(["--port", "1"])
    assert info.value.code == 2
    assert "--data-dir is required" in capsys.readouterr().err


def test_service_listens_on_loopback_and_releases_the_directory(tmp_path: Path) -> None:
    """The service opens the state, listens on the host and port, and unlocks on stop."""
    opts = Options()
    opts.parseOptions(["--data-dir", str(tmp_path / "d"), "--port", "7070"])
    reactor = MemoryReactorClock()
    svc = makeService(opts, reactor)
    svc.startService()
    port, _factory, _backlog, interface = reactor.tcpServers[0]
    assert (port, interface) == (7070, "127.0.0.1")
    svc.stopService()
    again = makeService(opts, MemoryReactorClock())
    again.startService()  # would raise StoreLockedError if the lock were kept
    again.stopService()


def test_twistd_plugin_is_discoverable() -> None:
    """``twistd leekyexecutor`` finds the plugin."""
    import twisted.plugins

    names = {p.tapname for p in getPlugins(IServiceMaker, twisted.plugins)}
    assert "leekyexecutor" in names


def started(tmp_path: Path) -> tuple[MemoryReactorClock, ExecutorService, Path]:
    """An executor service started on ``tmp_path/d`` over a fake reactor."""
    folder = tmp_path / "d"
    opts = Options()
    opts.parseOptions(["--data-dir", str(folder), "--port", "0"])
    reactor = MemoryReactorClock()
    reactor.running = True
    svc = makeService(opts, reactor)
    svc.startService()
    return reactor, svc, folder


def assert_stopped_with_exit_1(reactor: MemoryReactorClock, svc: ExecutorService) -> None:
    """The service refuses to apply, stopped listening and the process will exit 1."""
    assert reactor.hasStopped
    assert any(args == (1,) for _f, args, _kw in reactor.triggers["after"]["shutdown"])
    assert svc.listening is None
    assert svc.state is not None
    with pytest.raises(FolderLostError):
        svc.state.execute_batch("c/n/" + "0" * 32, [(1, b"ADD f")])


def test_deleted_data_folder_stops_the_executor(tmp_path: Path) -> None:
    """An executor whose data folder is deleted stops at the next check and exits 1:
    its saves would be lost (or land nowhere) and a restart would find nothing."""
    reactor, svc, folder = started(tmp_path)
    shutil.rmtree(folder)
    reactor.advance(DATA_DIR_CHECK_SECONDS)
    assert svc.lost is not None and "was deleted" in svc.lost and str(folder) in svc.lost
    assert_stopped_with_exit_1(reactor, svc)


def test_replaced_data_folder_stops_the_executor(tmp_path: Path) -> None:
    """A folder moved away and replaced by a new one at its path stops it too."""
    reactor, svc, folder = started(tmp_path)
    folder.rename(tmp_path / "moved")
    folder.mkdir()
    reactor.advance(DATA_DIR_CHECK_SECONDS)
    assert svc.lost is not None and "was replaced" in svc.lost
    assert_stopped_with_exit_1(reactor, svc)


def test_failed_save_checks_the_folder_at_once(tmp_path: Path) -> None:
    """A save that fails because the folder is gone stops the executor before the
    timed check, and keeps its state rather than reload an empty one."""
    reactor, svc, folder = started(tmp_path)
    assert svc.state is not None
    owner = "c/n/" + "0" * 32
    svc.state.execute_batch(owner, [(1, b"ADD f")])
    shutil.rmtree(folder)
    with pytest.raises(OSError):
        svc.state.execute_batch(owner, [(2, b"ADD g")])
    assert svc.lost is not None and "was deleted" in svc.lost
    assert svc.state.last_applied >= 1  # not rolled back to an empty reload
    assert_stopped_with_exit_1(reactor, svc)


def test_data_dir_check_is_an_option(tmp_path: Path) -> None:
    """--data-dir-check sets the interval of the folder check; it must be positive."""
    with pytest.raises(usage.UsageError, match="data-dir-check"):
        Options().parseOptions(["--data-dir", str(tmp_path), "--data-dir-check", "0"])
    opts = Options()
    opts.parseOptions(["--data-dir", str(tmp_path / "d"), "--data-dir-check", "5"])
    reactor = MemoryReactorClock()
    svc = makeService(opts, reactor)
    svc.startService()
    shutil.rmtree(tmp_path / "d")
    reactor.advance(4)
    assert svc.lost is None
    reactor.advance(1)
    assert svc.lost is not None


def test_unchanged_folder_keeps_the_executor_running(tmp_path: Path) -> None:
    """No false alarm: the checks of an untouched folder find nothing."""
    reactor, svc, _folder = started(tmp_path)
    for _ in range(3):
        reactor.advance(DATA_DIR_CHECK_SECONDS)
    assert svc.lost is None and not reactor.hasStopped
    svc.stopService()
