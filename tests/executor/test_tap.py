"""The executor's start command: options, the service, the twistd plugin."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactor
from twisted.plugin import getPlugins
from twisted.python import usage

from leeky_twisted.executor.tap import Options, main, makeService


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
    reactor = MemoryReactor()
    svc = makeService(opts, reactor)
    svc.startService()
    port, _factory, _backlog, interface = reactor.tcpServers[0]
    assert (port, interface) == (7070, "127.0.0.1")
    svc.stopService()
    again = makeService(opts, MemoryReactor())
    again.startService()  # would raise StoreLockedError if the lock were kept
    again.stopService()


def test_twistd_plugin_is_discoverable() -> None:
    """``twistd leekyexecutor`` finds the plugin."""
    import twisted.plugins

    names = {p.tapname for p in getPlugins(IServiceMaker, twisted.plugins)}
    assert "leekyexecutor" in names
