"""panoptes: a live monitoring server for Snakemake workflows."""

__version__ = "2.0.0"
