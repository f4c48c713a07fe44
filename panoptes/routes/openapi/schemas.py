"""The OpenAPI document's component schemas: workflows, jobs, rules, errors (shapes.py)."""

from __future__ import annotations

from typing import Any

from ...status import JobStatus, WorkflowStatus

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


def obj(properties: dict[str, Schema], description: str = "") -> Schema:
    """An object that has exactly these properties, all of them always present."""
    schema: Schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


TIME: Schema = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC"}
COUNT: Schema = {"type": "integer", "minimum": 0}
TEXT: Schema = {"type": "string"}
PATHS: Schema = {
    "type": "array",
    "items": {},
    "description": "paths, as strings (a job converted from panoptes 1.x may hold other values)",
}


ETA: Schema = {
    "type": ["number", "null"],
    "minimum": 0,
    "description": "a running workflow's estimated seconds left (docs/eta.md); null when it is"
    " not running, is a dry run, or nothing is known to estimate from",
}


# What a client may say of its run at /create_workflow (docs/wire.md).
RUN_FIELDS = ("command", "workdir", "snakefile", "host", "user", "snakemake_version", "client")


def schemas() -> dict[str, Schema]:
    found = _schemas()
    # What the reads answer (not the feed, nor the changes): a workflow and its time left.
    found["WorkflowRead"] = obj(
        {**found["Workflow"]["properties"], "eta_seconds": ETA},
        "A workflow as GET /api/workflow/<id> and GET /api/workflows answer it.",
    )
    return found


def _schemas() -> dict[str, Schema]:
    workflow_statuses = [s.value for s in WorkflowStatus]
    job_statuses = [s.value for s in JobStatus]
    return {
        "Error": obj({"error": TEXT, "detail": TEXT}, "Every 4xx (and 5xx) answer of the API."),
        "Workflow": obj(
            {
                "id": {"type": "integer"},
                "name": {**TEXT, "description": "unique; the client's workflow id, or a uuid"},
                "status": {"type": "string", "enum": workflow_statuses},
                "jobs_done": COUNT,
                "jobs_total": COUNT,
                "jobs_failed": {**COUNT, "description": "jobs whose latest attempt failed"},
                "label": nullable(
                    {
                        **TEXT,
                        "description": "the rules whose jobs came, in order, and the job count",
                    }
                ),
                "started_at": TIME,
                "updated_at": TIME,
                "finished_at": nullable(TIME),
                "completed_at": nullable(
                    {**TIME, "description": "the same as finished_at (the 1.x name)"}
                ),
                "error": nullable(TEXT),
                "dry_run": {"type": "boolean"},
                "command": nullable(TEXT),
                "workdir": nullable(TEXT),
                "snakefile": nullable(TEXT),
                "host": nullable({**TEXT, "description": "the machine the run is on"}),
                "user": nullable({**TEXT, "description": "the user it runs as"}),
                "snakemake_version": nullable(TEXT),
                "client": nullable({**TEXT, "description": "the sending program, versioned"}),
            }
        ),
        "Log": obj(
            {
                "path": TEXT,
                "tail": {**TEXT, "description": "the end of the file, from a line start"},
                "truncated": {"type": "boolean", "description": "the file is longer"},
                "error": {**TEXT, "description": "why the file could not be read"},
            }
        ),
        "DagNode": obj(
            {
                "rule": TEXT,
                "planned": nullable(COUNT),
                "total": COUNT,
                "done": COUNT,
                "running": COUNT,
                "failed": COUNT,
                "waiting": COUNT,
            }
        ),
        "Attempt": obj(
            {
                "attempt": {"type": "integer", "minimum": 1},
                "status": {"type": "string", "enum": job_statuses},
                "started_at": nullable(TIME),
                "finished_at": nullable(TIME),
                "error": nullable(TEXT),
            }
        ),
        "Job": obj(
            {
                "jobid": {"type": "integer"},
                "workflow_id": {"type": "integer"},
                "rule": nullable(TEXT),
                "name": nullable({**TEXT, "description": "the same as rule (the 1.x name)"}),
                "status": {"type": "string", "enum": job_statuses},
                "message": nullable(TEXT),
                "wildcards": {"type": "object"},
                "input": PATHS,
                "output": PATHS,
                "log": PATHS,
                "shell_command": nullable(TEXT),
                "threads": nullable({"type": "integer"}),
                "resources": nullable({"type": "object"}),
                "priority": nullable({"type": "integer"}),
                "reason": nullable(TEXT),
                "is_checkpoint": {"type": "boolean"},
                "started_at": nullable({**TIME, "description": "its latest attempt's start"}),
                "first_started_at": nullable({**TIME, "description": "its first attempt's start"}),
                "finished_at": nullable(TIME),
                "completed_at": nullable(TIME),
                "attempt": {"type": "integer", "minimum": 1},
                "attempts": {"type": "array", "items": ref("Attempt")},
                "error": nullable(TEXT),
                "error_line": nullable(
                    {**TEXT, "description": "why it failed, in one line (from logs or error)"}
                ),
                "exit_code": nullable({"type": "integer"}),
                "logs": {
                    "type": "array",
                    "items": ref("Log"),
                    "description": "the ends of a failed job's log files (plugin 1.0.0)",
                },
                "benchmark": nullable(
                    {
                        "type": "object",
                        "additionalProperties": {"type": "number"},
                        "description": "the job's benchmark: file (s, max_rss, ...)",
                    }
                ),
            }
        ),
        "Rule": obj(
            {
                "rule": {**TEXT, "description": "empty for jobs whose rule is not known yet"},
                "planned": nullable(
                    {**COUNT, "description": "jobs of this rule in the client's plan"}
                ),
                "total": {**COUNT, "description": "jobs of this rule seen so far"},
                "done": COUNT,
                "running": COUNT,
                "error": COUNT,
                "waiting": COUNT,
            }
        ),
        "RuleGraph": obj(
            {
                "nodes": {"type": "array", "items": ref("DagNode")},
                "edges": {
                    "type": "array",
                    "items": {"type": "array", "items": TEXT, "minItems": 2, "maxItems": 2},
                    "description": "[from_rule, to_rule]: from runs first",
                },
                "edges_from": {
                    "type": "string",
                    "enum": ["client", "jobs"],
                    "description": "the client's rule graph, or the files of the jobs so far",
                },
            }
        ),
        "GridCell": obj(
            {
                "jobid": {"type": "integer"},
                "status": {"type": "string", "enum": job_statuses},
                "attempt": {"type": "integer", "minimum": 1},
                "jobs": {**COUNT, "description": "jobs of this rule and dataset (usually 1)"},
            }
        ),
        "Grid": obj(
            {
                "key": nullable({**TEXT, "description": "the wildcard naming the datasets"}),
                "keys": {
                    "type": "object",
                    "additionalProperties": COUNT,
                    "description": "every wildcard, with how many values it takes",
                },
                "rules": {"type": "array", "items": TEXT, "description": "in pipeline order"},
                "other_rules": {
                    "type": "array",
                    "items": TEXT,
                    "description": "rules whose jobs have no `key` (all, a merge)",
                },
                "rows": {
                    "type": "array",
                    "items": obj(
                        {
                            "wildcards": {"type": "object"},
                            "cells": {"type": "object", "additionalProperties": ref("GridCell")},
                            "done": COUNT,
                            "failed": COUNT,
                            "total": COUNT,
                        }
                    ),
                    "description": "rows with a failure first, then by value",
                },
            }
        ),
        "Timeline": obj(
            {
                "origin": nullable({**TEXT, "description": "the first start; bars count from it"}),
                "rules": {"type": "array", "items": TEXT, "description": "in pipeline order"},
                "statuses": {"type": "array", "items": {"type": "string", "enum": job_statuses}},
                "wildcards": {
                    "type": "array",
                    "items": TEXT,
                    "description": 'each set of wildcards once, as "name=value" pairs joined'
                    ' by commas; the first is "" (none)',
                },
                "bars": {
                    "type": "array",
                    "items": {"type": "array", "minItems": 7, "maxItems": 7},
                    "description": "an attempt each: [jobid, index into rules, attempt, index"
                    " into statuses, start ms, end ms or null while it runs, index into"
                    " wildcards]",
                },
            }
        ),
        "WorkflowList": obj(
            {
                "workflows": {"type": "array", "items": ref("WorkflowRead")},
                "count": {**COUNT, "description": "how many match, on all pages"},
                "limit": COUNT,
                "offset": COUNT,
                "next_cursor": nullable(
                    {"type": "integer", "description": "?cursor= for the next page"}
                ),
            }
        ),
        "JobList": obj(
            {
                "jobs": {"type": "array", "items": ref("Job")},
                "count": COUNT,
                "limit": COUNT,
                "offset": COUNT,
                "next_cursor": nullable({"type": "integer"}),
            }
        ),
        "ServiceInfo": obj(
            {
                "status": {"type": "string", "enum": ["running", "unavailable"]},
                "version": TEXT,
                "database": {
                    "type": "object",
                    "properties": {
                        "ok": {"type": "boolean"},
                        "backend": TEXT,
                        "latency_ms": {"type": "number", "minimum": 0},
                        "error": {**TEXT, "description": "when ok is false"},
                    },
                    "required": ["ok", "backend"],
                    "additionalProperties": False,
                },
                "hub": obj(
                    {
                        "backend": TEXT,
                        "connected": {"type": "boolean"},
                        "subscribers": COUNT,
                        "delivered_seq": COUNT,
                    }
                ),
                "event_loop": {
                    "type": "string",
                    "description": "the server process's event loop: uvloop or asyncio",
                },
            }
        ),
    }
