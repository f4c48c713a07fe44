"""The conda recipes under recipe/, rendered as conda-build renders them (Jinja, then YAML),
held to the pyproject.toml they package: name, version, Python, every run dependency with
its bounds (under its conda name), the entry points, and what their tests import and run."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
RECIPES = {
    "panoptes-ui": ROOT / "recipe" / "panoptes-ui" / "meta.yaml",
    "snakemake-logger-plugin-panoptes": ROOT
    / "recipe"
    / "snakemake-logger-plugin-panoptes"
    / "meta.yaml",
}
# Where conda-forge and bioconda spell a PyPI name otherwise ("redis" there is the server).
CONDA_NAMES = {"prometheus-client": "prometheus_client", "redis": "redis-py"}
# What a PyPI extra brings, as conda packages of its own.
EXTRAS = {("sqlalchemy", "asyncio"): {"greenlet"}}
PLATFORMS = [
    {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"},
    {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix"},
    {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"},
]


def rendered(path: Path) -> dict[str, Any]:
    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(path.read_text())
    recipe: dict[str, Any] = yaml.safe_load(template.render(PYTHON="$PYTHON"))
    return recipe


def project(recipe: dict[str, Any], path: Path) -> dict[str, Any]:
    """The [project] table of the pyproject.toml the recipe's source path points at."""
    source = (path.parent / recipe["source"]["path"]).resolve()
    table: dict[str, Any] = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    return table


def version_of(name: str, table: dict[str, Any]) -> str:
    """The version pyproject.toml gives, or (dynamic) the package's __version__ literal."""
    if "version" in table:
        return str(table["version"])
    assert name == "panoptes-ui" and "version" in table["dynamic"]
    found = re.search(
        r'^__version__ = "([^"]+)"', (ROOT / "panoptes" / "__init__.py").read_text(), re.M
    )
    assert found is not None
    return found.group(1)


def conda_spec(line: str) -> tuple[str, SpecifierSet]:
    name, _, spec = line.partition(" ")
    return name, SpecifierSet(spec.replace(" ", ""))


def on_every_platform(requirement: Requirement) -> bool:
    marker = requirement.marker
    return marker is None or all(marker.evaluate(dict(platform)) for platform in PLATFORMS)


def expected_run(table: dict[str, Any]) -> tuple[dict[str, SpecifierSet], list[str]]:
    """pyproject's dependencies as conda run requirements, and the ones a noarch package
    must leave out (they hold only on some platforms)."""
    run = {"python": SpecifierSet(table["requires-python"])}
    left_out = []
    for line in table["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if not on_every_platform(requirement):
            left_out.append(name)
            continue
        run[CONDA_NAMES.get(name, name)] = requirement.specifier
        for extra in requirement.extras:
            run.update(dict.fromkeys(EXTRAS[(name, extra)], SpecifierSet()))
    return run, left_out


@pytest.mark.parametrize("name", list(RECIPES))
def test_the_recipe_packages_the_name_and_version_pyproject_gives(name: str) -> None:
    recipe = rendered(RECIPES[name])
    table = project(recipe, RECIPES[name])
    assert recipe["package"] == {"name": table["name"], "version": version_of(name, table)}
    assert table["name"] == name
    assert recipe["about"]["license"] == table["license"]
    assert recipe["about"]["summary"] == table["description"]
    build = recipe["build"]
    assert build["noarch"] == "python"
    assert build["script"] == "$PYTHON -m pip install . --no-deps -vv"


@pytest.mark.parametrize("name", list(RECIPES))
def test_run_requirements_are_pyprojects_dependencies_under_their_conda_names(name: str) -> None:
    recipe = rendered(RECIPES[name])
    run = dict(conda_spec(line) for line in recipe["requirements"]["run"])
    expected, left_out = expected_run(project(recipe, RECIPES[name]))
    assert run == expected
    # A dependency left out for its platform marker is explained in the recipe.
    text = RECIPES[name].read_text()
    for dependency in left_out:
        assert re.search(rf"^\s*#.*\b{dependency}\b", text, re.M), dependency
    host = dict(conda_spec(line) for line in recipe["requirements"]["host"])
    backend = tomllib.loads(
        ((RECIPES[name].parent / recipe["source"]["path"]).resolve() / "pyproject.toml").read_text()
    )["build-system"]["requires"]
    assert host == {
        "python": expected["python"],
        "pip": SpecifierSet(),
        **{Requirement(r).name: Requirement(r).specifier for r in backend},
    }


@pytest.mark.parametrize("name", list(RECIPES))
def test_entry_points_and_tests_are_the_packages_own(name: str) -> None:
    recipe = rendered(RECIPES[name])
    table = project(recipe, RECIPES[name])
    scripts = table.get("scripts", {})
    entry_points = recipe["build"].get("entry_points", [])
    assert entry_points == [f"{command} = {target}" for command, target in scripts.items()]
    tests = recipe["test"]
    for module in tests["imports"]:
        top = module.split(".")[0]
        source = (RECIPES[name].parent / recipe["source"]["path"]).resolve()
        assert (source / top).is_dir() or (source / "src" / top).is_dir(), module
    for command in tests["commands"]:
        program = command.split()[0]
        assert program in scripts or program in tests["requires"], command
    assert "pip check" in tests["commands"]


def test_the_servers_recipe_tests_its_command_and_app_module() -> None:
    tests = rendered(RECIPES["panoptes-ui"])["test"]
    assert "panoptes --version" in tests["commands"]
    for module in tests["imports"]:
        assert importlib.util.find_spec(module) is not None, module
