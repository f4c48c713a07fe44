"""apptainer.def, checked without Apptainer (it is not installed here, and building an image
needs it): it installs panoptes exactly as the Containerfile does, from files that exist, and
its %environment and %runscript work as written, run by a real shell on the installed
`panoptes`."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from panoptes import __version__
from panoptes.config import Config

from .conftest import ROOT
from .test_containerfile import final_stage, instructions

DEFINITION = ROOT / "apptainer.def"


def header() -> dict[str, str]:
    """The keywords before the first section: Bootstrap, From."""
    found = {}
    for line in DEFINITION.read_text().splitlines():
        if line.startswith("%"):
            break
        if line.strip() and not line.startswith("#"):
            keyword, value = line.split(":", 1)
            found[keyword.strip()] = value.strip()
    return found


def section(name: str) -> list[str]:
    """The lines of %name, stripped, without blank lines and comments."""
    lines = DEFINITION.read_text().splitlines()
    start = lines.index(f"%{name}") + 1
    body = []
    for line in lines[start:]:
        if line.startswith("%"):
            break
        if line.strip() and not line.strip().startswith("#"):
            body.append(line.strip())
    return body


def shell(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["/bin/sh", "-c", script, "sh", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        env=env,
    )
    return done.stdout


def test_builds_on_the_containerfile_base_image() -> None:
    assert header()["Bootstrap"] == "docker"
    base = final_stage()[0][1]
    assert base.removeprefix("docker.io/library/") == header()["From"]


def test_copies_the_containerfile_sources_into_src_and_they_exist() -> None:
    copied = {line.split()[0]: line.split()[1] for line in section("files")}
    sources = {
        source
        for name, args in instructions()
        if name == "COPY" and "--from" not in args
        for source in shlex.split(args)[:-1]
    }
    assert set(copied) == sources
    for source, target in copied.items():
        assert (ROOT / source).exists(), source
        assert target == f"/src/{source}"


def test_installs_with_the_containerfiles_own_pip_commands() -> None:
    post = section("post")
    assert post[0] == "cd /src"  # the Containerfile's WORKDIR for `pip wheel .`
    pip_commands = [
        command.strip()
        for name, args in instructions()
        if name == "RUN"
        for command in args.split("&&")
        if command.strip().startswith("pip ")
    ]
    assert len(pip_commands) == 2, pip_commands  # pip wheel, then pip install
    assert [line for line in post if line.startswith("pip ")] == pip_commands
    assert "mkdir -p /data" in post


def test_environment_defaults_to_data_and_yields_to_the_callers_settings() -> None:
    script = "\n".join(section("environment"))
    names = [line.split()[1].split("=", 1)[0] for line in section("environment")]
    printed = 'printf "%s\\n" ' + " ".join(f'"${name}"' for name in names)
    clean = {"PATH": os.environ["PATH"]}
    defaults = dict(zip(names, shell(f"{script}\n{printed}", env=clean).splitlines(), strict=True))
    assert defaults["PANOPTES_DB_URL"] == "/data/panoptes.db"
    assert defaults["PANOPTES_HOST"] == "127.0.0.1"  # the host's network: this machine only
    image_env = dict(item.split("=", 1) for item in shlex.split(dict(final_stage())["ENV"]))
    assert defaults["PANOPTES_PORT"] == image_env["PANOPTES_PORT"]
    # Every PANOPTES_ setting is one panoptes reads (config.py reads them all).
    read = (ROOT / "panoptes" / "config.py").read_text()
    assert all(f'"{name}"' in read for name in names if name.startswith("PANOPTES_")), names
    assert Config.from_env(defaults).db_url.endswith("/data/panoptes.db")
    overridden = shell(
        f"{script}\n{printed}", env={**clean, "PANOPTES_DB_URL": "postgresql://db/panoptes"}
    )
    assert "postgresql://db/panoptes" in overridden.splitlines()


def test_runscript_and_startscript_start_the_installed_panoptes(tmp_path: Path) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert section("runscript") == section("startscript") == ['exec panoptes "$@"']
    assert "panoptes" in scripts
    # The console script pip installs, alone on PATH, as in the image.
    installed = shutil.which("panoptes", path=str(Path(sys.executable).parent))
    assert installed is not None
    (tmp_path / "panoptes").symlink_to(installed)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    printed = shell("\n".join(section("runscript")), "--version", env=env)
    assert __version__ in printed
