"""snakemake_example_workflow/ run end to end as its README says: real Snakemake 9.27.1 with
this repository's plugin (--logger panoptes, the address in SNAKEMAKE_LOGGER_PANOPTES_ADDRESS),
real samtools (Debian's, which scripts/test installs) and real htseq-count (HTSeq from PyPI,
scripts/e2e-venvs htseq), against a real panoptes; then what panoptes shows, read from its
REST API, and the merged count table, checked against counts made here from the SAM files
and the GTF."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ..conftest import ROOT, LiveServer
from .conftest import Api, explained, provided_venv, run_snakemake

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "snakemake_example_workflow"
DATA = EXAMPLE / "data"
SAMPLES = sorted(path.stem for path in DATA.glob("*.sam"))
# The rules with a job per sample, in pipeline order; merge and all run once.
PER_SAMPLE = ["sort", "index", "count"]
# What htseq-count counts besides the genes, in the order it prints them.
SPECIAL = ["__no_feature", "__ambiguous", "__too_low_aQual", "__not_aligned"]
SPECIAL += ["__alignment_not_unique"]
# What a run in the folder itself leaves (its .gitignore), not copied into a test's run.
MADE = (".snakemake", "sorted", "counts", "logs", "results", "__pycache__")


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for PATH holding samtools and htseq-count, and nothing else."""
    samtools = shutil.which("samtools")
    if samtools is None:
        pytest.fail("samtools is not on PATH: install Debian's samtools (scripts/test does)")
    htseq_count = provided_venv("htseq") / "bin" / "htseq-count"
    directory = tmp_path_factory.mktemp("tools")
    (directory / "samtools").symlink_to(samtools)
    (directory / "htseq-count").symlink_to(htseq_count)
    return directory


def gene_exons(gtf: Path) -> dict[str, list[tuple[int, int]]]:
    """gene_id -> its exons (1-based, inclusive), from the GTF's exon lines."""
    exons: dict[str, list[tuple[int, int]]] = {}
    for line in gtf.read_text().splitlines():
        fields = line.split("\t")
        if line.startswith("#") or len(fields) < 9 or fields[2] != "exon":
            continue
        gene = fields[8].split('gene_id "', 1)[1].split('"', 1)[0]
        exons.setdefault(gene, []).append((int(fields[3]), int(fields[4])))
    return exons


def expected_counts(sam: Path, exons: dict[str, list[tuple[int, int]]]) -> dict[str, int]:
    """What htseq-count -s no (mode union) makes of `sam`: a read overlapping the exons of
    one gene counts for it, of none for __no_feature, of several for __ambiguous."""
    counts = dict.fromkeys([*sorted(exons), *SPECIAL], 0)
    for line in sam.read_text().splitlines():
        if line.startswith("@"):
            continue
        fields = line.split("\t")
        assert fields[5].endswith("M") and fields[5][:-1].isdigit(), fields  # no gaps, clips
        first = int(fields[3])
        last = first + int(fields[5][:-1]) - 1
        genes = {
            gene
            for gene, spans in exons.items()
            if any(start <= last and first <= end for start, end in spans)
        }
        if len(genes) == 1:
            counts[genes.pop()] += 1
        else:
            counts["__ambiguous" if genes else "__no_feature"] += 1
    return counts


def read_table(path: Path) -> dict[str, dict[str, int]]:
    """results/counts.tsv as sample -> row name -> count (and the rows' order kept)."""
    header, *rows = (line.split("\t") for line in path.read_text().splitlines())
    assert header[0] == "gene", header
    return {
        sample: {row[0]: int(row[column]) for row in rows}
        for column, sample in enumerate(header[1:], 1)
    }


def test_the_shipped_data_is_what_make_data_makes(tmp_path: Path) -> None:
    copy = tmp_path / "data"
    copy.mkdir()
    shutil.copy(DATA / "make_data.py", copy)
    subprocess.run([sys.executable, str(copy / "make_data.py")], check=True, timeout=30)
    made = sorted(path.name for path in copy.iterdir() if path.name != "make_data.py")
    shipped = sorted(path.name for path in DATA.iterdir() if path.name != "make_data.py")
    assert made == shipped
    assert [f"{sample}.sam" for sample in SAMPLES] == [n for n in made if n.endswith(".sam")]
    for name in made:
        assert (copy / name).read_bytes() == (DATA / name).read_bytes(), name


def test_the_workflow_passes_snakemakes_lint_and_each_rule_has_a_conda_env(
    sm9p_bin: Path, tmp_path: Path
) -> None:
    work = tmp_path / "example"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(*MADE))
    linted = run_snakemake(sm9p_bin, work, "--lint")
    assert linted.returncode == 0 and "Lints for" not in linted.stdout, linted.describe()
    # Each rule that runs a tool names a conda environment file (for --use-conda) that
    # exists and asks for that tool.
    blocks = re.split(r"^rule ", (EXAMPLE / "Snakefile").read_text(), flags=re.M)[1:]
    envs = {
        block.split(":", 1)[0]: found.group(1)
        for block in blocks
        if (found := re.search(r'^    conda:\n        "([^"]+)"', block, re.M))
    }
    assert set(envs) == {*PER_SAMPLE, "merge"}, envs
    wanted = {"sort": "samtools", "index": "samtools", "count": "htseq", "merge": "python"}
    for rule, path in envs.items():
        env = yaml.safe_load((EXAMPLE / path).read_text())
        assert env["channels"], path
        names = [re.split(r"[ <>=]", spec)[0] for spec in env["dependencies"]]
        assert wanted[rule] in names, (rule, path, names)


def test_the_example_workflow_runs_done_in_panoptes(
    sm9p_bin: Path, tools: Path, live_server: LiveServer, panoptes_api: Api, tmp_path: Path
) -> None:
    work = tmp_path / "example"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(*MADE))
    env = {
        "SNAKEMAKE_LOGGER_PANOPTES_ADDRESS": live_server.url,
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
    }
    run = run_snakemake(sm9p_bin, work, "--cores", "2", "--logger", "panoptes", env=env)
    api = panoptes_api
    with explained(live_server, run):
        assert run.returncode == 0
        listed = api.only_workflow()
        workflow = api.workflow(listed["id"])
        assert workflow["name"] == "example"
        assert workflow["status"] == "Done"
        assert workflow["jobs_failed"] == 0

        jobs = api.jobs(workflow["id"])
        per_rule = {rule: len(SAMPLES) for rule in PER_SAMPLE} | {"merge": 1, "all": 1}
        assert Counter(job["rule"] for job in jobs) == per_rule
        assert {job["status"] for job in jobs} == {"Done"}
        assert workflow["jobs_done"] == workflow["jobs_total"] == sum(per_rule.values())
        for rule in PER_SAMPLE:
            samples = sorted(job["wildcards"]["sample"] for job in jobs if job["rule"] == rule)
            assert samples == SAMPLES, rule
        rules = {rule["rule"]: rule for rule in api.rules(workflow["id"])}
        for name, planned in per_rule.items():
            assert rules[name]["planned"] == rules[name]["done"] == planned, rules[name]

        grid = api.get(f"/api/workflow/{workflow['id']}/grid")
        assert grid["key"] == "sample"
        assert grid["rules"] == PER_SAMPLE
        assert sorted(grid["other_rules"]) == ["all", "merge"]
        assert [row["wildcards"]["sample"] for row in grid["rows"]] == SAMPLES
        for row in grid["rows"]:
            assert row["done"] == row["total"] == len(PER_SAMPLE), row
            assert row["failed"] == 0, row
            assert {cell["status"] for cell in row["cells"].values()} == {"Done"}, row

    # What the pipeline made: coordinate-sorted BAMs, and the right counts, merged.
    for sample in SAMPLES:
        header = subprocess.run(
            [str(tools / "samtools"), "view", "-H", str(work / "sorted" / f"{sample}.bam")],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        assert "SO:coordinate" in header, header
    exons = gene_exons(DATA / "genes.gtf")
    expected = {sample: expected_counts(DATA / f"{sample}.sam", exons) for sample in SAMPLES}
    merged = read_table(work / "results" / "counts.tsv")
    assert merged == expected
    assert all(list(table) == list(expected[SAMPLES[0]]) for table in merged.values())
    # The data exercises every kind of count: each gene, reads between genes, overlaps.
    for sample in SAMPLES:
        assert all(merged[sample][gene] > 0 for gene in exons), merged[sample]
        assert merged[sample]["__no_feature"] > 0 and merged[sample]["__ambiguous"] > 0
