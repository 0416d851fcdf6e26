"""``robustctl ui`` refuses a port another process listens on instead of advertising its URL."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from robustctl.cli import app

runner = CliRunner()


def test_ui_on_a_busy_port_fails_naming_the_port_and_never_execs(tmp_path, monkeypatch):
    launched: list[list[str]] = []
    monkeypatch.setattr("os.execv", lambda exe, argv: launched.append(argv))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = runner.invoke(app, ["ui", f"work_dir={tmp_path}", "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"port {port} on 127.0.0.1 is already in use" in result.output
    assert "--port N" in result.output
    assert "open http" not in result.output  # no URL pointing at the other process
    assert launched == []
