"""Delivery when the server is down, hangs, fails or refuses: Snakemake must never wait long."""

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import snakemake_records as sm
from conftest import MakeRun
from receiver import Receiver, closed_port_url

from snakemake_logger_plugin_panoptes import sender

Warnings = Callable[[], list[str]]


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short waits between retries, where what is tested is not how long they are."""
    monkeypatch.setattr(sender, "RETRY_DELAYS", (0.02, 0.04, 0.08))


def timed_stop(run: object) -> float:
    began = time.monotonic()
    run.stop()  # type: ignore[attr-defined]
    return time.monotonic() - began


def a_run(run: object, progress: int = 20) -> None:
    log = run.log  # type: ignore[attr-defined]
    sm.workflow_started(log, "/w/Snakefile")
    sm.run_info(log, {"all": progress, "total": progress})
    for done in range(1, progress + 1):
        sm.progress(log, done, progress)


def test_server_down_close_returns_in_time(make_run: MakeRun, warnings_seen: Warnings) -> None:
    run = make_run(address=closed_port_url(), flush_timeout=1.0)
    a_run(run)
    assert timed_stop(run) < 2.0
    (warning,) = warnings_seen()
    assert "messages were not delivered to http://127.0.0.1:" in warning
    assert run.handler.delivery_stats.sent == 0


def test_an_outage_is_warned_once(
    make_run: MakeRun, warnings_seen: Warnings, quick_retries: None
) -> None:
    run = make_run(address=closed_port_url(), flush_timeout=5.0)
    a_run(run, progress=50)
    assert timed_stop(run) < 3.0  # after one message used its retries, the rest got one try
    cannot_reach, summary = warnings_seen()
    assert cannot_reach.startswith("panoptes: cannot reach http://127.0.0.1:")
    assert "ConnectionError" in cannot_reach
    # info + progress 0 + run_info + 50 progress + workflow_success
    assert summary.startswith("panoptes: 54 of 54 messages were not delivered")
    assert run.handler.delivery_stats.failed == 54


def test_hanging_server_close_returns_in_time(
    make_run: MakeRun, receiver: Receiver, warnings_seen: Warnings
) -> None:
    receiver.mode = "hang"  # accepts the connection, never answers
    run = make_run(flush_timeout=1.0)  # and the default 10 s timeout for an answer
    a_run(run)
    assert timed_stop(run) < 2.0
    assert len(receiver.requests) == 1  # the registration, still waiting
    (warning,) = warnings_seen()
    assert "still waiting at exit" in warning


@pytest.fixture
def blackhole_url() -> Iterator[str]:
    """An address whose connections never complete: its accept queue is full, so the SYNs
    are dropped, as by a firewall."""
    with socket.socket() as server, socket.socket() as filler:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        filler.connect(server.getsockname())
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_connecting_gives_up_sooner_than_the_answer_timeout(
    make_run: MakeRun,
    blackhole_url: str,
    monkeypatch: pytest.MonkeyPatch,
    warnings_seen: Warnings,
) -> None:
    monkeypatch.setattr(sender, "CONNECT_TIMEOUT", 0.2)  # 3 s in real runs
    monkeypatch.setattr(sender, "RETRY_DELAYS", ())
    run = make_run(address=blackhole_url, timeout=30.0, flush_timeout=5.0)
    sm.workflow_started(run.log, "/w/Snakefile")
    assert timed_stop(run) < 2.0  # two messages, each given up after connecting 0.2 s
    assert "ConnectTimeout" in warnings_seen()[0]
    assert run.handler.delivery_stats.failed == 2


def test_5xx_are_retried_and_delivered_in_order(
    make_run: MakeRun, receiver: Receiver, warnings_seen: Warnings
) -> None:
    receiver.fail_updates = 2  # the first message is answered 500 twice, then accepted
    run = make_run()
    a_run(run, progress=5)
    run.stop()
    assert receiver.levels() == [
        "info",
        "info",
        "info",
        "progress",
        "run_info",
        *["progress"] * 5,
        "workflow_success",
    ]
    assert [r.status for r in receiver.requests[1:4]] == [500, 500, 200]
    assert warnings_seen() == []
    assert run.handler.delivery_stats.sent == 9


def test_after_a_drop_messages_get_one_try_until_the_server_is_back(
    make_run: MakeRun, receiver: Receiver, warnings_seen: Warnings, quick_retries: None
) -> None:
    receiver.mode = "500"
    run = make_run()
    sm.workflow_started(run.log, "/w/Snakefile")
    assert receiver.wait_for(4)  # one try and three retries
    sm.progress(run.log, 0, 2)
    assert receiver.wait_for(5)
    time.sleep(0.2)
    assert len(receiver.requests) == 5  # the second message got a single try
    receiver.mode = "ok"
    sm.progress(run.log, 1, 2)
    run.stop()
    assert receiver.levels() == ["progress", "workflow_success"]
    down, back, summary = warnings_seen()
    assert down.startswith("panoptes: cannot reach") and "HTTP 500" in down
    assert back.endswith("answers again; 2 messages were dropped meanwhile")
    assert summary.startswith("panoptes: 2 of 4 messages were not delivered")


def test_4xx_is_not_retried_and_says_why(
    make_run: MakeRun, receiver: Receiver, warnings_seen: Warnings
) -> None:
    receiver.mode = "reject"
    run = make_run()
    a_run(run, progress=2)
    run.stop()
    updates = [r for r in receiver.requests if r.path == "/update_workflow_status"]
    assert len(updates) == 6  # info, progress, run_info, 2 progress, workflow_success
    refused, summary = warnings_seen()  # one warning for the six same refusals
    assert "refused a message (HTTP 422:" in refused
    assert '"error": "unknown workflow"' in refused and "no workflow with id 7" in refused
    assert "6 refused by it" in summary


def test_panoptes_ui_1_6_2_answers_ok_as_text(
    make_run: MakeRun, receiver: Receiver, warnings_seen: Warnings
) -> None:
    receiver.mode = "legacy"
    run = make_run()
    a_run(run, progress=3)
    run.stop()
    assert run.handler.delivery_stats.sent == 7
    assert warnings_seen() == []


def test_a_full_queue_drops_and_counts(
    make_run: MakeRun, receiver: Receiver, warnings_seen: Warnings
) -> None:
    receiver.mode = "hang"
    run = make_run(flush_timeout=0.2)
    sm.workflow_started(run.log, "/w/Snakefile")
    assert receiver.wait_for(1)  # the sender holds that message, waiting for the server
    for done in range(sender.QUEUE_SIZE + 5):
        sm.progress(run.log, done, 1)
    run.drain()
    stats = run.handler.delivery_stats
    assert stats.overflowed == 5
    run.stop()
    assert stats.unsent == sender.QUEUE_SIZE + 2  # the queue, the held one, the final
    full, summary = warnings_seen()
    assert "10000 messages are waiting" in full
    assert "5 because too many were waiting" in summary


@pytest.fixture
def certificate(tmp_path: Path) -> Iterator[tuple[str, str]]:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    yield str(cert), str(key)


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"])
def test_tls_with_a_private_ca_bundle(
    make_run: MakeRun,
    certificate: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, certificate[0])
    server = Receiver(tls=certificate)
    try:
        run = make_run(address=server.url)
        sm.workflow_started(run.log, "/w/Snakefile")
        run.stop()
        assert server.levels() == ["info", "workflow_success"]
    finally:
        server.close()


def test_tls_without_the_bundle_is_refused(
    make_run: MakeRun,
    certificate: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    warnings_seen: Warnings,
    quick_retries: None,
) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    server = Receiver(tls=certificate)
    try:
        run = make_run(address=server.url)
        sm.workflow_started(run.log, "/w/Snakefile")
        run.stop()
        assert server.requests == []
        assert any("SSLError" in w for w in warnings_seen())
    finally:
        server.close()
