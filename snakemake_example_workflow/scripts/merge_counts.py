"""The merge rule: one table of genes x samples from the per-sample htseq-count tables.

Every table lists the same rows (each gene of the GTF, then htseq-count's `__no_feature`,
`__ambiguous`, ... counters) in the same order; the merged one keeps that order, with a
header row naming the samples. Run by Snakemake's `script:` (the `snakemake` object), or
by hand: python3 merge_counts.py OUT SAMPLE=TABLE... (what it did goes to stderr, or to the
rule's log).
"""

# No `from __future__` import: Snakemake puts its own lines before this file's.
import sys
from pathlib import Path


def read_counts(path: Path) -> dict[str, str]:
    rows = (line.split("\t") for line in path.read_text().splitlines() if line)
    return {name: count for name, count in rows}


def merge(tables: dict[str, Path]) -> str:
    counts = {sample: read_counts(path) for sample, path in tables.items()}
    names = list(next(iter(counts.values())))
    for sample, table in counts.items():
        if list(table) != names:
            raise SystemExit(f"merge: {tables[sample]} has other rows than the first table")
    lines = ["\t".join(["gene", *counts])]
    lines += ["\t".join([name, *(table[name] for table in counts.values())]) for name in names]
    return "\n".join(lines) + "\n"


def main(output: str, pairs: list[str], log: str | None = None) -> None:
    tables = dict(pair.split("=", 1) for pair in pairs)
    merged = merge({sample: Path(path) for sample, path in tables.items()})
    Path(output).write_text(merged)
    said = f"merge: {len(tables)} samples, {merged.count(chr(10)) - 1} rows into {output}\n"
    if log is None:
        sys.stderr.write(said)
    else:
        Path(log).write_text(said)


if "snakemake" in globals():  # given by Snakemake's script: directive
    smk = globals()["snakemake"]
    pairs = [f"{s}={p}" for s, p in zip(smk.params.samples, smk.input, strict=True)]
    main(smk.output[0], pairs, smk.log[0])
elif __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
