"""Log records as Snakemake 9.27.1 logs them: the same calls, messages and ``extra`` keys.

Each helper copies the ``logger.info(...)``/``logger.error(...)`` call of the Snakemake source
named in its docstring, so the handler gets what it gets in a real run.
"""

import logging
import platform
import sys
from collections.abc import Sequence
from typing import Any

from snakemake_interface_logger_plugins.common import LogEvent

try:  # Snakemake's own container for a job's resources, when Snakemake is installed
    from snakemake.iocontainers import ResourceList as _ResourceList

    HAVE_SNAKEMAKE = True
except ImportError:
    HAVE_SNAKEMAKE = False


class NamedlistLike(list[Any]):
    """Stands in for Snakemake's Namedlist when Snakemake is not installed: a list + _names."""

    def __init__(self, fromdict: dict[str, Any]) -> None:
        super().__init__(fromdict.values())
        self._names = {name: (i, None) for i, name in enumerate(fromdict)}

    def items(self) -> list[tuple[str, Any]]:
        return [(name, self[i]) for name, (i, _) in self._names.items()]


def resources(**values: Any) -> Any:
    """A job's resources as Job.resources gives them, with Snakemake's _cores and _nodes."""
    fromdict = {"_cores": 1, "_nodes": 1, "tmpdir": "/tmp", **values}
    if HAVE_SNAKEMAKE:
        return _ResourceList(fromdict=fromdict)
    return NamedlistLike(fromdict)


def workflow_started(log: logging.Logger, snakefile_main: str, workdir: str = "/w") -> None:
    """workflow.py Workflow.execute with **self.info_header."""
    log.info(
        "Workflow has started!",
        extra=dict(
            event=LogEvent.WORKFLOW_STARTED,
            datetime="2026-12-01 10:00:00",
            snakemake_version="9.27.1",
            platform=platform.platform(),
            host=platform.node(),
            user="ana",
            python_version=sys.version,
            cmd=" ".join(sys.argv),
            basedir=workdir,
            rundir=workdir,
            cwd=workdir,
            configfiles=[],
            snakefile_main=snakefile_main,
            snakefile="/venv/lib/python3.11/site-packages/snakemake/workflow.py",
            workflow_id="6f1c0c9e-0000-4000-8000-000000000000",
            config_md5="99914b932bd37a50b983c5e7c90ae93b",
            quietness="host",
        ),
    )


def rulegraph(log: logging.Logger, graph: dict[str, Any]) -> None:
    """workflow.py Workflow.log_rulegraph."""
    log.info(None, extra=dict(event=LogEvent.RULEGRAPH, rulegraph=graph))


def run_info(log: logging.Logger, stats: dict[str, int]) -> None:
    """workflow.py Workflow.execute: the "Job stats" table of DAG.stats()."""
    rows = "".join(f"{name:<8}{count:>5}\n" for name, count in stats.items())
    log.info(
        f"Job stats:\njob      count\n-----  -------\n{rows}",
        extra=dict(event=LogEvent.RUN_INFO, stats=stats),
    )


def job_started(log: logging.Logger, jobs: Sequence[int]) -> None:
    """scheduling/job_scheduler.py JobScheduler.schedule."""
    log.info(
        f"Execute {len(jobs)} jobs...",
        extra=dict(event=LogEvent.JOB_STARTED, jobs=list(jobs)),
    )


def job_info(
    log: logging.Logger,
    jobid: int,
    rule: str,
    *,
    log_files: Sequence[str] = (),
    benchmark: str | None = None,
    shellcmd: str | None = "true",
    wildcards: dict[str, str] | None = None,
) -> None:
    """jobs.py Job.log_info: JOB_INFO, then SHELLCMD."""
    log.info(
        f" Rule: {rule}, Jobid: {jobid}",
        extra=dict(
            event=LogEvent.JOB_INFO,
            jobid=jobid,
            rule_msg=None,
            rule_name=rule,
            local=True,
            input=[f"in/{rule}.txt"],
            output=[f"out/{rule}.txt"],
            log=list(log_files),
            benchmark=benchmark,
            wildcards=wildcards or {},
            reason="Missing output files",
            resources=resources(mem_mb=100),
            priority=0,
            threads=1,
            indent=False,
            is_checkpoint=False,
            printshellcmd=True,
            is_handover=False,
            shellcmd=shellcmd,
        ),
    )
    log.info(
        f"Shell command: {shellcmd}",
        extra=dict(event=LogEvent.SHELLCMD, shellcmd=shellcmd, indent=False),
    )


def job_finished(log: logging.Logger, jobid: int, rule: str = "rule") -> None:
    """scheduling/job_scheduler.py JobScheduler._finish_jobs, then progress()."""
    log.info(
        f"Finished jobid: {jobid} (Rule: {rule})",
        extra=dict(event=LogEvent.JOB_FINISHED, job_id=jobid),
    )


def progress(log: logging.Logger, done: int, total: int) -> None:
    """scheduling/job_scheduler.py JobScheduler.progress."""
    log.info(None, extra=dict(event=LogEvent.PROGRESS, done=done, total=total))


def error(log: logging.Logger, text: str, exception: str) -> None:
    """exceptions.py print_exception: the formatted exception, and its class name."""
    log.error(text, extra=dict(event=LogEvent.ERROR, exception=exception))


def job_error(log: logging.Logger, jobid: int, rule: str, log_files: Sequence[str] = ()) -> None:
    """jobs.py Job.log_error with get_log_error_info."""
    log.error(
        f"Error in rule {rule}, jobid: {jobid}",
        extra=dict(
            rule_name=rule,
            rule_msg=None,
            jobid=jobid,
            input=[f"in/{rule}.txt"],
            output=[f"out/{rule}.txt"],
            log=list(log_files),
            conda_env=None,
            container_img=None,
            aux={},
            indent=False,
            shellcmd="false",
            event=LogEvent.JOB_ERROR,
        ),
    )


def rule_exception(command: str, status: int, line: int = 23) -> str:
    """The text print_exception gives a failed shell command."""
    return (
        f'RuleException:\nCalledProcessError in file "/w/Snakefile", line {line}:\n'
        f"Command 'set -euo pipefail;  {command}' returned non-zero exit status {status}."
    )


WORKFLOW_ERROR = "WorkflowError:\nAt least one job did not complete successfully."


def failing_job(
    log: logging.Logger, jobid: int, rule: str, status: int, logs: Sequence[str]
) -> None:
    """A shell job that fails: local executor's print_exception, then report_job_error."""
    error(log, rule_exception(f"run {rule}", status), "RuleException")
    job_error(log, jobid, rule, logs)
