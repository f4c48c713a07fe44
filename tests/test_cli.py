"""The command line, the configuration, and real server processes (panoptes and hypercorn)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from panoptes import __version__, cli
from panoptes.config import DEFAULT_DB_FILE, Config, ConfigError, database_url

from .conftest import ROOT, LiveServer, form_body, free_port

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BIN = Path(sys.executable).parent


def console_script(name: str) -> list[str]:
    """The installed entry point, as a user would type it (or the module if not installed)."""
    script = BIN / name
    if script.exists():
        return [str(script)]
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", name]


# --------------------------------------------------------------------------- flags


def test_version_flag_prints_the_version():
    result = subprocess.run(
        [*console_script("panoptes"), "--version"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"panoptes {__version__}"


def test_the_distribution_is_panoptes_ui_2():
    """Installed as panoptes-ui (the name panoptes 1.x had on PyPI; "panoptes" there is an
    unrelated project), at the version the command prints."""
    shown = subprocess.run(
        [sys.executable, "-m", "pip", "show", "panoptes-ui"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    fields = dict(line.split(": ", 1) for line in shown.stdout.splitlines() if ": " in line)
    assert (fields["Name"], fields["Version"]) == ("panoptes-ui", __version__)
    assert __version__.split(".")[0] == "2"


def test_help_lists_flags_endpoints_and_environment(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "--host",
        "--port",
        "--db",
        "--version",
        "/create_workflow",
        "/api/workflows",
        "PANOPTES_DB_URL",
        "PANOPTES_STALE_HOURS",
    ):
        assert text in out, text


def test_help_through_python_dash_m():
    result = subprocess.run(
        [sys.executable, "-m", "panoptes", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "usage: panoptes" in result.stdout


@pytest.mark.parametrize("argv", [["--colour"], ["--port", "http"]])
def test_bad_flags_are_an_error(argv: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert argv[0] in capsys.readouterr().err


# --------------------------------------------------------------------------- configuration


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    config = Config.from_env({})
    assert config.host == "127.0.0.1"
    assert config.port == 5000
    assert config.db_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / DEFAULT_DB_FILE}"
    assert DEFAULT_DB_FILE == ".panoptes.db"
    assert config.stale_hours == 48.0
    assert Config() == Config.from_env({})


def test_config_from_environment(tmp_path: Path):
    db = tmp_path / "runs.db"
    config = Config.from_env(
        {
            "PANOPTES_HOST": "0.0.0.0",
            "PANOPTES_PORT": "8123",
            "PANOPTES_DB_URL": str(db),
            "PANOPTES_STALE_HOURS": "0.5",
            "PANOPTES_MAX_BODY_BYTES": "1024",
            "UNRELATED": "x",
        }
    )
    assert config.host == "0.0.0.0"
    assert config.port == 8123
    assert config.db_url == f"sqlite+aiosqlite:///{db}"
    assert config.stale_hours == 0.5
    assert config.max_body_bytes == 1024
    # Blank values mean "not set".
    blank = Config.from_env({"PANOPTES_HOST": " ", "PANOPTES_PORT": "", "PANOPTES_DB_URL": ""})
    assert (blank.host, blank.port) == ("127.0.0.1", 5000)
    assert blank.db_url.endswith(f"/{DEFAULT_DB_FILE}")


def test_config_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PANOPTES_PORT", "7001")
    monkeypatch.setenv("PANOPTES_STALE_HOURS", "0")
    config = Config.from_env()
    assert config.port == 7001
    assert config.stale_hours == 0.0


@pytest.mark.parametrize(
    ("name", "value"),
    [("PANOPTES_PORT", "http"), ("PANOPTES_PORT", "1.5"), ("PANOPTES_STALE_HOURS", "soon")],
)
def test_bad_environment_values_are_refused(name: str, value: str):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db/panoptes", "postgresql+asyncpg://u:p@db/panoptes"),
        ("postgres://u@db/p", "postgresql+asyncpg://u@db/p"),
        ("postgresql+psycopg2://u@db/p", "postgresql+asyncpg://u@db/p"),
        ("sqlite:////var/lib/p.db", "sqlite+aiosqlite:////var/lib/p.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_urls_get_an_async_driver(given: str, expected: str):
    assert database_url(given) == expected


def test_database_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert database_url("sub/p.db") == f"sqlite+aiosqlite:///{tmp_path.resolve()}/sub/p.db"
    assert database_url("~/p.db") == f"sqlite+aiosqlite:///{Path.home()}/p.db"


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """Stands in for the server: records the config main() would serve with."""
    configs: list[Config] = []

    async def fake_run(config: Config) -> None:
        configs.append(config)

    monkeypatch.setattr(cli, "run", fake_run)
    for name in ("PANOPTES_HOST", "PANOPTES_PORT", "PANOPTES_DB_URL", "PANOPTES_STALE_HOURS"):
        monkeypatch.delenv(name, raising=False)
    return configs


def test_flags_build_the_config(started: list[Config], tmp_path: Path):
    db = tmp_path / "flags.db"
    assert cli.main(["--host", "0.0.0.0", "--port", "6001", "--db", str(db)]) == 0
    [config] = started
    assert (config.host, config.port) == ("0.0.0.0", 6001)
    assert config.db_url == f"sqlite+aiosqlite:///{db}"
    # The old server's --ip still works.
    assert cli.main(["--ip", "10.0.0.1"]) == 0
    assert started[1].host == "10.0.0.1"


def test_flags_win_over_the_environment(
    started: list[Config], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("PANOPTES_HOST", "192.168.0.1")
    monkeypatch.setenv("PANOPTES_PORT", "7000")
    monkeypatch.setenv("PANOPTES_DB_URL", str(tmp_path / "env.db"))
    monkeypatch.setenv("PANOPTES_STALE_HOURS", "3")
    assert cli.main(["--port", "7001"]) == 0
    [config] = started
    assert config.port == 7001
    assert config.host == "192.168.0.1"
    assert config.db_url == f"sqlite+aiosqlite:///{tmp_path / 'env.db'}"
    assert config.stale_hours == 3.0
    assert cli.main(["--db", "postgresql://db/p"]) == 0
    assert started[1].db_url == "postgresql+asyncpg://db/p"


def test_bad_environment_stops_the_cli_with_a_message(
    started: list[Config], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("PANOPTES_PORT", "eighty")
    assert cli.main([]) == 2
    assert started == []
    assert "PANOPTES_PORT" in capsys.readouterr().err


# --------------------------------------------------------------------------- real servers


def test_live_server_answers(live_server: LiveServer):
    response = httpx.get(f"{live_server.url}/api/service-info", timeout=10)
    assert response.status_code == 200
    info = response.json()
    assert (info["status"], info["version"]) == ("running", __version__)
    assert info["database"]["ok"] is True
    created = httpx.get(f"{live_server.url}/create_workflow", timeout=10).json()
    assert created["status"] == "Running"
    listed = httpx.get(f"{live_server.url}/api/workflows", timeout=10).json()
    assert [wf["id"] for wf in listed["workflows"]] == [created["id"]]


def test_live_server_runs_on_uvloop_and_takes_bursts_of_connections(live_server: LiveServer):
    info = httpx.get(f"{live_server.url}/api/service-info", timeout=10).json()
    assert info["event_loop"] == "uvloop"
    # The listening socket's queue (ss shows it as Send-Q): Hypercorn's default of 100 drops
    # the connections of a bigger burst, which then wait a second to try again.
    listening = subprocess.run(
        ["ss", "-ltnH", f"sport = :{live_server.port}"], capture_output=True, text=True
    ).stdout.split()
    assert int(listening[2]) == 2048, listening


def test_panoptes_uvloop_0_keeps_asyncio(tmp_path: Path):
    server = LiveServer(db=tmp_path / "plain.db", env={"PANOPTES_UVLOOP": "0"}).start()
    try:
        info = httpx.get(f"{server.url}/api/service-info", timeout=10).json()
        assert info["event_loop"] == "asyncio"
    finally:
        server.stop()


async def _post(http: httpx.AsyncClient, workflow_id: int, msg: dict[str, Any]) -> bool:
    """True if the server acknowledged the message."""
    try:
        response = await http.post(
            "/update_workflow_status", content=form_body(workflow_id, msg), headers=FORM
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def _ingest_until_stopped(server: LiveServer) -> tuple[int, set[int], int]:
    """Post jobs, SIGTERM the server while more are in flight; return the acknowledged ones.

    Also returns how many were acknowledged after the signal was sent.
    """
    process = server.process
    assert process is not None
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        workflow_id: int = (await http.get("/create_workflow?workflow_id=graceful")).json()["id"]
        acknowledged: set[int] = set()
        for jobid in range(30):
            info = {"level": "job_info", "jobid": jobid, "name": "step"}
            assert await _post(http, workflow_id, info)
            assert await _post(http, workflow_id, {"level": "job_finished", "jobid": jobid})
            acknowledged.add(jobid)
        signalled = asyncio.Event()
        answered = 0
        after_signal = 0

        async def late(jobid: int) -> bool:
            nonlocal answered, after_signal
            ok = await _post(http, workflow_id, {"level": "job_info", "jobid": jobid, "name": "l"})
            answered += 1
            after_signal += ok and signalled.is_set()
            if answered == 40:  # the signal lands while the other requests are in flight
                process.send_signal(signal.SIGTERM)
                signalled.set()
            return ok

        results = await asyncio.gather(*(late(jobid) for jobid in range(30, 330)))
    acknowledged.update(30 + i for i, ok in enumerate(results) if ok)
    return workflow_id, acknowledged, after_signal


async def test_sigterm_exits_cleanly_and_keeps_every_acknowledged_event(tmp_path: Path):
    server = LiveServer(db=tmp_path / "graceful.db").start()
    try:
        workflow_id, acknowledged, after_signal = await _ingest_until_stopped(server)
        # Requests in flight when the signal came are finished, not dropped.
        assert after_signal > 0
        assert server.process is not None
        # One SIGTERM is enough: wait for the exit rather than signalling again.
        assert server.process.wait(timeout=20) == 0, server.log()
        assert "Traceback" not in server.log()
    finally:
        server.stop()
    restarted = LiveServer(db=server.db).start()
    try:
        async with httpx.AsyncClient(base_url=restarted.url, timeout=20) as http:
            wf = (await http.get(f"/api/workflow/{workflow_id}")).json()["workflow"]
            body = (await http.get(f"/api/workflow/{workflow_id}/jobs?limit=1000")).json()
    finally:
        restarted.stop()
    assert wf["name"] == "graceful"
    stored = {job["jobid"]: job for job in body["jobs"]}
    assert acknowledged <= set(stored), sorted(acknowledged - set(stored))
    for jobid in range(30):
        assert stored[jobid]["status"] == "Done"
        assert stored[jobid]["rule"] == "step"
    for jobid in acknowledged - set(range(30)):
        assert stored[jobid]["rule"] == "l"


def test_restart_on_the_same_database_keeps_everything(tmp_path: Path):
    db = tmp_path / "again.db"
    first = LiveServer(db=db, env={"PANOPTES_STALE_HOURS": "0"}).start()
    try:
        created = httpx.get(f"{first.url}/create_workflow?workflow_id=kept", timeout=10).json()
        for msg in (
            {"level": "job_info", "jobid": 1, "name": "a", "input": ["x"], "wildcards": {"s": "1"}},
            {"level": "job_finished", "jobid": 1},
            {"level": "workflow_success"},
        ):
            response = httpx.post(
                f"{first.url}/update_workflow_status",
                content=form_body(created["id"], msg),
                headers=FORM,
                timeout=10,
            )
            assert response.status_code == 200
        before = httpx.get(f"{first.url}/api/workflow/{created['id']}/jobs", timeout=10).json()
    finally:
        assert first.process is not None
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=20) == 0
        first.stop()
    second = LiveServer(db=db).start()
    try:
        after = httpx.get(f"{second.url}/api/workflow/{created['id']}/jobs", timeout=10).json()
        wf = httpx.get(f"{second.url}/api/workflow/{created['id']}", timeout=10).json()
        newer = httpx.get(f"{second.url}/create_workflow", timeout=10).json()
    finally:
        second.stop()
    assert after == before
    assert after["jobs"][0]["input"] == ["x"] and after["jobs"][0]["wildcards"] == {"s": "1"}
    assert wf["workflow"]["status"] == "Done"
    assert newer["id"] > created["id"]


@contextmanager
def served_by(
    tmp_path: Path, argv: list[str], db: str
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """`argv` (an ASGI server's command serving the app; {port} is filled in) on a free port,
    with PANOPTES_DB_URL=tmp_path/db, as README runs it: its URL, process and log, once it
    answers."""
    port = free_port()
    log_path = tmp_path / f"{Path(argv[0]).name}.log"
    env = {**os.environ, "PANOPTES_DB_URL": str(tmp_path / db)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [part.format(port=port) for part in argv],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                httpx.get(f"{url}/api/service-info", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        yield url, process, log_path
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise


Served = AbstractContextManager[tuple[str, subprocess.Popen[bytes], Path]]


def hypercorn(tmp_path: Path, *flags: str) -> Served:
    """`hypercorn [flags] 'panoptes.app:create_app()'` on a free port (served_by)."""
    argv = [*console_script("hypercorn"), *flags, "--bind", "127.0.0.1:{port}"]
    return served_by(tmp_path, [*argv, "panoptes.app:create_app()"], "hyper.db")


async def assert_feed_limits_and_close(url: str, process: subprocess.Popen[bytes]) -> int:
    """A feed client's frame over 64 KiB is refused (1009); on SIGTERM the open feeds are
    closed at once (1001), well inside the 10 s grace period an open feed would use up.
    Returns the server's exit status."""
    feed_url = url.replace("http://", "ws://") + "/ws"
    async with connect(feed_url) as big:
        assert json.loads(await big.recv())["type"] == "hello"
        await big.send("x" * (100 * 1024))
        with pytest.raises(ConnectionClosed) as too_big:
            await asyncio.wait_for(big.recv(), 5)
        assert too_big.value.rcvd is not None and too_big.value.rcvd.code == 1009
    async with connect(feed_url) as feed:
        assert json.loads(await feed.recv())["type"] == "hello"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(feed.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        code = await asyncio.to_thread(process.wait, 10)
    assert time.monotonic() - started < 5
    return code


def test_hypercorn_serves_the_app_factory(tmp_path: Path):
    with hypercorn(tmp_path) as (url, process, log_path):
        response = httpx.get(f"{url}/api/service-info", timeout=1)
        assert response.status_code == 200
        assert response.json()["status"] == "running"
        # The database from PANOPTES_DB_URL is created and used.
        created = httpx.get(f"{url}/create_workflow", timeout=10).json()
        assert httpx.get(f"{url}/api/workflow/{created['id']}", timeout=10).status_code == 200
        assert (tmp_path / "hyper.db").exists()
        assert not (tmp_path / DEFAULT_DB_FILE).exists()
        process.terminate()
        code = process.wait(timeout=20)
    assert code == 0, log_path.read_text()


async def test_hypercorn_with_the_serving_settings_behaves_as_panoptes_does(tmp_path: Path):
    """serving.HypercornSettings gives plain Hypercorn panoptes' settings, and the app itself
    closes its feeds at once (1001) when the server is told to stop."""
    settings = "python:panoptes.serving.HypercornSettings"
    with hypercorn(tmp_path, "--config", settings) as (url, process, log_path):
        code = await assert_feed_limits_and_close(url, process)
    assert code == 0, log_path.read_text()


def test_warns_when_serving_the_network_without_a_token(tmp_path: Path) -> None:
    open_server = LiveServer(db=tmp_path / "open.db", env={"PANOPTES_HOST": "0.0.0.0"}).start()
    open_server.stop()
    assert "without a token" in open_server.log()
    token = {"PANOPTES_HOST": "0.0.0.0", "PANOPTES_TOKEN": "a-long-enough-token-123"}
    locked = LiveServer(db=tmp_path / "locked.db", env=token).start()
    local = LiveServer(db=tmp_path / "local.db").start()
    locked.stop()
    local.stop()
    assert "without a token" not in locked.log()
    assert "without a token" not in local.log()


def test_the_server_starts_and_stops_without_a_warning(tmp_path: Path) -> None:
    server = LiveServer(db=tmp_path / "quiet.db").start()
    assert server.stop() == 0
    log = server.log()
    assert "panoptes" in log and "Warning" not in log and "WARNING" not in log, log
