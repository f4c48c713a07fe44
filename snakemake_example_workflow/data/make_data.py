"""Makes this folder's tiny test data, always the same bytes (a fixed seed, no other input):

  reference.fa     one made-up chromosome, chr1, of 6,000 bases
  genes.gtf        five genes on it; geneC and geneD overlap, so some reads are ambiguous
  <sample>.sam     250 single-end 40-base reads per sample, in no particular order (the
                   workflow sorts them), some between the genes; treated samples express
                   geneB more and geneE less than the controls

The outputs are committed, so running the workflow needs none of this; run it again
(`python3 data/make_data.py`) only after changing it.
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROM = "chr1"
LENGTH = 6_000
READ_LENGTH = 40
READS_PER_SAMPLE = 250
SEED = 17

# gene id -> (strand, [(start, end), ...] exons, 1-based and inclusive as in GTF).
GENES: dict[str, tuple[str, list[tuple[int, int]]]] = {
    "geneA": ("+", [(201, 700), (901, 1300)]),
    "geneB": ("-", [(1501, 2200)]),
    "geneC": ("+", [(2601, 3100), (3301, 3600)]),
    "geneD": ("-", [(3501, 4100)]),
    "geneE": ("+", [(4601, 5400)]),
}
# Relative expression per sample; "intergenic" reads fall outside every gene's span.
EXPRESSION: dict[str, dict[str, float]] = {
    "ctrl1": {"geneA": 3, "geneB": 1, "geneC": 2, "geneD": 1, "geneE": 4, "intergenic": 0.8},
    "ctrl2": {"geneA": 3, "geneB": 1.2, "geneC": 2, "geneD": 1, "geneE": 3.6, "intergenic": 0.8},
    "treat1": {"geneA": 3, "geneB": 4, "geneC": 2, "geneD": 1, "geneE": 1, "intergenic": 0.8},
    "treat2": {"geneA": 2.8, "geneB": 4.5, "geneC": 2, "geneD": 1.2, "geneE": 0.8, "intergenic": 1},
}


def reference(rng: random.Random) -> str:
    return "".join(rng.choice("ACGT") for _ in range(LENGTH))


def fasta(sequence: str) -> str:
    lines = [sequence[i : i + 60] for i in range(0, len(sequence), 60)]
    return f">{CHROM}\n" + "\n".join(lines) + "\n"


def gtf() -> str:
    """A gene, a transcript and its exons per gene, as Ensembl and GENCODE write them."""
    rows = []
    for gene, (strand, exons) in GENES.items():
        start, end = exons[0][0], exons[-1][1]
        ids = f'gene_id "{gene}"; transcript_id "{gene}.t1";'
        rows.append((start, end, "gene", strand, f'gene_id "{gene}"; gene_name "{gene}";'))
        rows.append((start, end, "transcript", strand, ids))
        for number, (first, last) in enumerate(exons, 1):
            rows.append((first, last, "exon", strand, f'{ids} exon_number "{number}";'))
    return "".join(
        f"{CHROM}\tmake_data\t{kind}\t{start}\t{end}\t.\t{strand}\t.\t{attributes}\n"
        for start, end, kind, strand, attributes in rows
    )


def intergenic() -> list[tuple[int, int]]:
    """The stretches outside every gene's span that fit a whole read."""
    spans = sorted((exons[0][0], exons[-1][1]) for _, exons in GENES.values())
    gaps, position = [], 1
    for start, end in spans:
        if start - position >= READ_LENGTH:
            gaps.append((position, start - 1))
        position = max(position, end + 1)
    if LENGTH - position + 1 >= READ_LENGTH:
        gaps.append((position, LENGTH))
    return gaps


def read_start(rng: random.Random, regions: list[tuple[int, int]]) -> int:
    """A start at which a whole read fits in one of `regions`, longer ones more often."""
    weights = [end - start + 2 - READ_LENGTH for start, end in regions]
    start, end = rng.choices(regions, weights=weights)[0]
    return rng.randint(start, end - READ_LENGTH + 1)


def sam(sample: str, sequence: str, rng: random.Random) -> str:
    expression = EXPRESSION[sample]
    sources = list(expression)
    regions = {gene: exons for gene, (_, exons) in GENES.items()} | {"intergenic": intergenic()}
    lines = [
        "@HD\tVN:1.6\tSO:unsorted",
        f"@SQ\tSN:{CHROM}\tLN:{LENGTH}",
        f"@RG\tID:{sample}\tSM:{sample}",
        "@PG\tID:make_data\tPN:make_data.py",
    ]
    for number in range(1, READS_PER_SAMPLE + 1):
        source = rng.choices(sources, weights=[expression[s] for s in sources])[0]
        start = read_start(rng, regions[source])
        flag = rng.choice((0, 16))
        bases = sequence[start - 1 : start - 1 + READ_LENGTH]
        lines.append(
            f"{sample}.r{number:04d}\t{flag}\t{CHROM}\t{start}\t60\t{READ_LENGTH}M\t*\t0\t0\t"
            f"{bases}\t{'I' * READ_LENGTH}\tRG:Z:{sample}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    rng = random.Random(SEED)
    sequence = reference(rng)
    (HERE / "reference.fa").write_text(fasta(sequence))
    (HERE / "genes.gtf").write_text(gtf())
    for sample in EXPRESSION:
        (HERE / f"{sample}.sam").write_text(sam(sample, sequence, rng))


if __name__ == "__main__":
    main()
