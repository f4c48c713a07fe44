"""Log tails and benchmark files, read from real files."""

import os
import time
from pathlib import Path

import pytest
from snakemake_records import HAVE_SNAKEMAKE

from snakemake_logger_plugin_panoptes.files import (
    TAIL_BUDGET,
    log_tails,
    read_benchmark,
    read_tail,
    share_budget,
)

# Written by Snakemake 9.27.1 for `benchmark: "bench/make_a.tsv"` and for
# `benchmark: repeat("bench/flaky.tsv", 2)` (a job too quick to be sampled has 0s).
REAL_SINGLE = (
    "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    "0.84\t0:00:00\t3.05\t4.26\t0.27\t0.48\t0.00\t0.01\t0.00\t0.00\n"
)
# What REAL_SINGLE reads as.
REAL_SINGLE_READ = {
    "s": 0.84,
    "max_rss": 3.05,
    "max_vms": 4.26,
    "max_uss": 0.27,
    "max_pss": 0.48,
    "io_in": 0.0,
    "io_out": 0.01,
    "mean_load": 0.0,
    "cpu_time": 0.0,
}
REAL_REPEAT = (
    "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    "0.01\t0:00:00\t0\t0\t0\t0\t0.00\t0.01\t0.00\t0.00\n"
    "0.00\t0:00:00\t0\t0\t0\t0\t0.00\t0.00\t0.00\t0.00\n"
)


def numbered_lines(path: Path, count: int, start: int = 0) -> None:
    with open(path, "w") as out:
        for i in range(start, start + count):
            out.write(f"line {i:07d} of a long log\n")


def test_tail_of_a_large_file_is_bounded_and_starts_at_a_line(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    numbered_lines(path, 100_000)  # 2.6 MB
    tail, truncated = read_tail(str(path), TAIL_BUDGET)
    assert truncated
    assert 0 < len(tail.encode()) <= TAIL_BUDGET
    assert tail.endswith("line 0099999 of a long log\n")
    first = tail.splitlines()[0]
    assert first.startswith("line ") and first.endswith(" of a long log"), first


def test_tail_of_a_small_file_is_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "small.log"
    path.write_bytes(b"one\ntwo \xff bad byte\n")
    assert read_tail(str(path), TAIL_BUDGET) == ("one\ntwo \ufffd bad byte\n", False)


def test_tail_right_after_a_line_break_keeps_that_line(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("aaaa\nbbbb\ncccc\n")
    assert read_tail(str(path), 10) == ("bbbb\ncccc\n", True)
    assert read_tail(str(path), 9) == ("cccc\n", True)


def test_tail_seeks_instead_of_reading_a_huge_file(tmp_path: Path) -> None:
    path = tmp_path / "sparse.log"
    with open(path, "wb") as out:  # 8 GiB, nearly all a hole: reading it whole takes long
        out.truncate(8 * 1024**3)
        out.seek(0, os.SEEK_END)
        out.write(b"\nMARKER at the very end\n")
    began = time.monotonic()
    tail, truncated = read_tail(str(path), TAIL_BUDGET)
    assert time.monotonic() - began < 1.0
    assert tail == "MARKER at the very end\n" and truncated


def test_files_share_the_budget(tmp_path: Path) -> None:
    small, big1, big2 = tmp_path / "s.log", tmp_path / "b1.log", tmp_path / "b2.log"
    small.write_text("short log\n")
    numbered_lines(big1, 50_000)
    numbered_lines(big2, 50_000)
    tails = log_tails([str(small), str(big1), str(big2)])
    assert [t["path"] for t in tails] == [str(small), str(big1), str(big2)]
    assert tails[0] == {"path": str(small), "tail": "short log\n", "truncated": False}
    assert sum(len(t["tail"].encode()) for t in tails) <= TAIL_BUDGET
    # The small file's unused share went to the big ones.
    assert len(tails[1]["tail"].encode()) > TAIL_BUDGET // 3
    assert tails[1]["truncated"] and tails[2]["truncated"]


def test_share_budget_gives_small_files_what_they_need() -> None:
    assert share_budget({"a": 10, "b": 1000, "c": 1000}, 100) == {"a": 10, "b": 45, "c": 45}


def test_unreadable_logs_say_why(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)  # opening a pipe to read it would block
    tails = log_tails([str(tmp_path / "missing.log"), str(fifo), str(tmp_path)])
    assert tails[0] == {"path": str(tmp_path / "missing.log"), "error": "file not found"}
    assert "not a regular file" in tails[1]["error"]
    assert "not a regular file" in tails[2]["error"]


def test_annotated_paths_are_read(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("hello\n")
    assert log_tails([f"{path} (pipe)"])[0]["tail"] == "hello\n"


def test_benchmark_single_row(tmp_path: Path) -> None:
    path = tmp_path / "b.tsv"
    path.write_text(REAL_SINGLE)
    assert read_benchmark(str(path)) == REAL_SINGLE_READ


def test_benchmark_repeats_are_averaged(tmp_path: Path) -> None:
    path = tmp_path / "b.tsv"
    path.write_text(REAL_REPEAT.replace("0.00\t0:00:00\t0\t0", "0.03\t0:00:00\t4\t0", 1))
    result = read_benchmark(str(path))
    assert result is not None
    assert result["repeats"] == 2
    assert result["s"] == pytest.approx(0.02)
    assert result["max_rss"] == pytest.approx(2.0)


def test_benchmark_missing_values_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "b.tsv"
    path.write_text(
        "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
        "1.5\t0:00:01\tNA\tNA\tNA\tNA\tNA\tNA\tNA\t-\n"
    )
    assert read_benchmark(str(path)) == {"s": 1.5}


def test_benchmark_missing_or_empty_file_gives_nothing(tmp_path: Path) -> None:
    assert read_benchmark(str(tmp_path / "none.tsv")) is None
    (tmp_path / "empty.tsv").write_text("")
    assert read_benchmark(str(tmp_path / "empty.tsv")) is None


@pytest.mark.skipif(not HAVE_SNAKEMAKE, reason="needs Snakemake installed")
@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_benchmark_written_by_snakemake(tmp_path: Path, suffix: str) -> None:
    from snakemake.benchmark import BenchmarkRecord, write_benchmark_records

    records = []
    for seconds, rss in ((2.0, 100.5), (4.0, 300.5)):
        record = BenchmarkRecord(running_time=seconds, max_rss=rss, max_vms=400.0)
        record.data_collected = True
        records.append(record)
    path = tmp_path / f"b{suffix}"
    write_benchmark_records(records, str(path), extended_fmt=False)
    result = read_benchmark(str(path))
    assert result is not None
    assert result["s"] == pytest.approx(3.0)
    assert result["max_rss"] == pytest.approx(200.5)
    assert result["max_vms"] == pytest.approx(400.0)
    assert result["repeats"] == 2
    assert set(result) <= {
        "s",
        "max_rss",
        "max_vms",
        "max_uss",
        "max_pss",
        "io_in",
        "io_out",
        "mean_load",
        "cpu_time",
        "repeats",
    }
