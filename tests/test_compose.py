"""compose.yaml and its proxy's deploy/Caddyfile, checked without a container engine (none
runs here, and `docker compose` is not installed): the file's structure against the code
(the settings panoptes reads, the Containerfile it builds, the services it names), its health
checks run against a live server, and the Caddyfile served by a real Caddy (Debian's, which
scripts/test installs) in front of two live panoptes processes, websocket feed included."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.asyncio.client import connect

from panoptes.config import Config

from .conftest import ROOT, LiveServer, free_port

COMPOSE = ROOT / "compose.yaml"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
REPLICAS = ["panoptes-1", "panoptes-2"]
# What a user puts in .env; everything else in compose.yaml must work as written.
USER_ENV = {"PANOPTES_TOKEN": "a-long-secret-for-the-compose-test", "PANOPTES_ALLOWED_HOSTS": ""}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def interpolated(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} with the variables in `env`."""

    def one(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        assert operator != ":?", f"compose refuses to start without {name}: {rest}"
        return rest if operator == ":-" else ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def environment(service: str, env: dict[str, str]) -> dict[str, str]:
    raw: dict[str, str] = services()[service]["environment"]
    return {name: interpolated(str(value), env) for name, value in raw.items()}


def caddy_upstreams() -> tuple[str, list[str]]:
    """The address the Caddyfile listens on, and its reverse_proxy upstreams."""
    text = CADDYFILE.read_text()
    listen = re.search(r"^(:\d+)\s*\{", text, re.MULTILINE)
    proxy = re.search(r"^\s*reverse_proxy\s+([^{\n]+)", text, re.MULTILINE)
    assert listen and proxy, text
    return listen.group(1), proxy.group(1).split()


def test_postgresql_redis_two_replicas_and_a_proxy_built_from_the_containerfile() -> None:
    found = services()
    assert set(found) == {"db", "redis", *REPLICAS, "proxy"}
    assert found["db"]["image"].startswith("docker.io/library/postgres:")
    assert found["redis"]["image"].startswith("docker.io/library/redis:")
    for name in REPLICAS:
        build = found[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]) == ROOT / "Containerfile"
        assert found[name] == found[REPLICAS[0]], "the replicas differ"
    # Only the proxy is published; every volume named is declared.
    assert [name for name, service in found.items() if "ports" in service] == ["proxy"]
    named = {
        volume.split(":", 1)[0]
        for service in found.values()
        for volume in service.get("volumes", [])
        if not volume.startswith(("./", "/"))
    }
    assert named == set(compose()["volumes"]) == {"pgdata"}
    assert any(v.endswith(":/var/lib/postgresql/data") for v in found["db"]["volumes"])


def test_every_panoptes_setting_in_it_is_one_panoptes_reads() -> None:
    env = environment(REPLICAS[0], {**USER_ENV, "PANOPTES_ALLOWED_HOSTS": "monitor.lab.org"})
    defaults = Config.from_env({})
    for name, value in env.items():
        assert name.startswith("PANOPTES_"), name
        assert Config.from_env({name: value}) != defaults, f"{name} changes no setting"
    config = Config.from_env(env)
    assert config.token == USER_ENV["PANOPTES_TOKEN"]
    assert config.allowed_hosts == ("monitor.lab.org",)
    # The database and the broker are the services of this file, with the db's credentials.
    db = services()["db"]["environment"]
    user, password, name = db["POSTGRES_USER"], db["POSTGRES_PASSWORD"], db["POSTGRES_DB"]
    assert config.db_url == f"postgresql+asyncpg://{user}:{password}@db/{name}"
    assert config.broadcast_url == "redis://redis:6379/0"
    # PANOPTES_ALLOWED_HOSTS may stay empty; PANOPTES_TOKEN may not.
    assert Config.from_env(environment(REPLICAS[0], USER_ENV)).allowed_hosts == ()
    with pytest.raises(AssertionError, match="PANOPTES_TOKEN"):
        environment(REPLICAS[0], {})


def test_start_order_waits_for_health_checks_that_exist() -> None:
    found = services()
    for name, service in found.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        for needed, condition in service.get("depends_on", {}).items():
            assert needed in found and needed != name, (name, needed)
            assert condition == {"condition": "service_healthy"}, (name, needed)
            assert "healthcheck" in found[needed], needed
    assert set(found["proxy"]["depends_on"]) == set(REPLICAS)
    assert set(found[REPLICAS[0]]["depends_on"]) == {"db", "redis"}


def test_the_replicas_health_check_passes_on_a_live_server_and_fails_without_one(
    live_server: LiveServer,
) -> None:
    command = services()[REPLICAS[0]]["healthcheck"]["test"][1:]
    assert command[0] == "python"
    # The image listens on 5000 (Containerfile); the live server on a port of its own.
    probe = [
        sys.executable,
        *(part.replace(":5000/", f":{live_server.port}/") for part in command[1:]),
    ]
    assert probe != [sys.executable, *command[1:]]
    assert subprocess.run(probe, capture_output=True, check=False, timeout=10).returncode == 0
    live_server.stop()
    assert subprocess.run(probe, capture_output=True, check=False, timeout=10).returncode != 0


def test_the_paths_the_proxy_checks_answer_200(live_server: LiveServer) -> None:
    wget = services()["proxy"]["healthcheck"]["test"]
    proxied = re.search(r"health_uri\s+(\S+)", CADDYFILE.read_text())
    assert wget[1] == "wget" and proxied is not None
    for url in (wget[-1], proxied.group(1)):
        path = "/" + url.split("://", 1)[-1].split("/", 1)[-1] if "://" in url else url
        response = httpx.get(live_server.url + path, timeout=5)
        assert response.status_code == 200, (url, response.text)


def test_the_caddyfile_proxies_to_the_replicas_on_the_published_port() -> None:
    listen, upstreams = caddy_upstreams()
    image_port = "5000"  # the Containerfile's EXPOSE and PANOPTES_PORT
    assert upstreams == [f"{name}:{image_port}" for name in REPLICAS]
    proxy = services()["proxy"]
    assert proxy["ports"] == [f"5000:{listen.lstrip(':')}"]
    mounted = {v.split(":")[0]: v.split(":")[1] for v in proxy["volumes"]}
    assert mounted == {"./deploy/Caddyfile": "/etc/caddy/Caddyfile"}
    assert (ROOT / "deploy" / "Caddyfile").is_file()


# ---- the Caddyfile in a real Caddy, in front of two real panoptes processes


@pytest.fixture
def caddy() -> str:
    found = shutil.which("caddy")
    if found is None:
        pytest.fail("caddy is not on PATH: install Debian's caddy (scripts/test does)")
    return found


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[LiveServer]]:
    servers = [LiveServer(db=tmp_path / f"{name}.db").start() for name in REPLICAS]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def proxy(caddy: str, replicas: list[LiveServer], tmp_path: Path) -> Iterator[str]:
    """deploy/Caddyfile served by Caddy, its upstreams and port moved to loopback ones."""
    listen, upstreams = caddy_upstreams()
    port = free_port()
    text = re.sub(rf"^{listen}(\s*{{)", rf":{port}\1", CADDYFILE.read_text(), flags=re.MULTILINE)
    for upstream, server in zip(upstreams, replicas, strict=True):
        text = text.replace(upstream, f"127.0.0.1:{server.port}")
    config = tmp_path / "Caddyfile"
    config.write_text(text)
    log = (tmp_path / "caddy.log").open("wb")
    command = [caddy, "run", "--config", str(config), "--adapter", "caddyfile"]
    # Caddy keeps its state under the XDG directories: here, not in the home directory.
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, (tmp_path / "caddy.log").read_text()
            try:
                httpx.get(url + "/api/service-info", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, (tmp_path / "caddy.log").read_text()
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


async def test_caddy_serves_both_replicas_and_their_feed_on_one_port(
    proxy: str, replicas: list[LiveServer]
) -> None:
    async with httpx.AsyncClient(base_url=proxy, timeout=5) as http:
        info = await http.get("/api/service-info")
        assert info.status_code == 200 and info.json()["status"] == "running"
        # Round robin: of four new workflows each replica (its own database here) got some.
        for _ in range(4):
            created = await http.get("/create_workflow")
            assert created.status_code == 200, created.text
        counts = []
        for server in replicas:
            listed = await http.get(f"{server.url}/api/workflows")
            counts.append(len(listed.json()["workflows"]))
    assert sum(counts) == 4 and all(counts), counts
    # The websocket feed goes through the proxy too.
    async with connect(proxy.replace("http://", "ws://") + "/ws", open_timeout=5) as feed:
        hello = json.loads(await feed.recv())
        assert hello["type"] == "hello", hello
