"""The OpenAPI 3.1 document of the REST API and the two endpoints Snakemake calls.

Written by hand from what the routes and shapes.py really answer; tests/test_openapi.py keeps
it honest: its paths must be exactly the app's routes, and schemathesis checks every answer
of a running server against it.
"""

from __future__ import annotations

from typing import Any

from ... import __version__
from ...ingest.wire import MAX_JOBS_PER_MESSAGE, MAX_NAME_CHARS
from ...models import MAX_INT
from ...status import JobStatus, WorkflowStatus
from .common import (
    CONFLICT,
    CROSS_SITE,
    DIGITS,
    FORM,
    JSON,
    MEDIA_TYPE,
    NO_NUL,
    TOO_LARGE,
    TSV,
    UNAUTHORIZED,
    _changes,
    _error,
    _json,
    _paging,
    _query,
    _reads,
    _statuses,
    _workflow_id,
    a_name,
)
from .notifications import notification_paths, notification_schemas
from .schemas import COUNT, RUN_FIELDS, TEXT, Schema, obj, ref, schemas


def _workflow_paths() -> dict[str, Schema]:
    workflow = _json(obj({"workflow": ref("Workflow")}), "the workflow")
    read = _json(obj({"workflow": ref("WorkflowRead")}), "the workflow and its time left")
    rename_body = {
        "type": "object",
        "properties": {
            "name": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_NAME_CHARS,
                "pattern": a_name(),
            }
        },
    }
    rename = _changes("Rename a workflow", {"200": workflow})
    rename["description"] = (
        "Without a name (Snakemake 8 sends {} after registering) nothing changes and the "
        "workflow is returned."
    )
    rename["requestBody"] = {
        "required": False,
        "content": {JSON: {"schema": rename_body}, FORM: {"schema": rename_body}},
    }
    rename["responses"].update(
        {
            "400": _error(
                f"the name is not a non-empty string of at most {MAX_NAME_CHARS} "
                "characters, or holds a NUL"
            ),
            "409": _error("another workflow has that name"),
            "413": TOO_LARGE,
            "415": MEDIA_TYPE,
        }
    )
    delete = _changes(
        "Delete a finished workflow and its jobs", {"204": {"description": "deleted"}}
    )
    delete["responses"]["409"] = _error("the workflow is running: cancel it first")
    return {
        "get": {"parameters": [_workflow_id()], **_reads("One workflow", read)},
        "put": {"parameters": [_workflow_id()], **rename},
        "delete": {"parameters": [_workflow_id()], **delete},
    }


def _paths() -> dict[str, Schema]:
    job = _json(
        obj({"job": ref("Job"), "jobs": {**ref("Job"), "description": "= job (1.x)"}}),
        "the job, with its input, output, log, shell command and attempts",
    )
    cancel = _changes(
        "Mark a running (or stale) workflow Cancelled",
        {"200": _json(obj({"workflow": ref("Workflow")}), "the cancelled workflow")},
    )
    cancel["responses"]["409"] = CONFLICT
    return {
        "/api/openapi.json": {
            "get": _reads("This document", _json({"type": "object"}, "OpenAPI 3.1"), found=False)
        },
        "/api/service-info": {
            "get": {
                "summary": "Whether panoptes can store what clients send",
                "description": "Open even when a token is set (health checks, Snakemake 8).",
                "responses": {
                    "200": _json(ref("ServiceInfo"), "running"),
                    "503": _json(ref("ServiceInfo"), "the database does not answer"),
                },
            }
        },
        "/api/workflows": {
            "get": {
                "parameters": [
                    _statuses([s.value for s in WorkflowStatus]),
                    _query(
                        "q",
                        {"type": "string", "pattern": NO_NUL},
                        "only names containing this (any case)",
                    ),
                    _query(
                        "name",
                        {"type": "string", "pattern": NO_NUL},
                        "the same as q, when q is not given",
                    ),
                    *_paging("workflows"),
                ],
                **_reads(
                    "Workflows, newest first",
                    _json(ref("WorkflowList"), "a page"),
                    found=False,
                    query=True,
                ),
            }
        },
        "/api/workflows/stats": {
            "get": _reads(
                "How many workflows there are in each status",
                _json(
                    obj(
                        {
                            "counts": {
                                "type": "object",
                                "propertyNames": {"enum": [s.value for s in WorkflowStatus]},
                                "additionalProperties": COUNT,
                            },
                            "total": COUNT,
                        }
                    ),
                    "statuses with no workflow are left out of counts",
                ),
                found=False,
            )
        },
        "/api/workflows/all": {
            "delete": _changes(
                "Delete every workflow",
                {"200": _json(obj({"deleted": COUNT, "msg": TEXT}), "how many went")},
                found=False,
            )
        },
        "/api/workflow/{id}": _workflow_paths(),
        "/api/workflow/{id}/jobs": {
            "get": {
                "parameters": [
                    _workflow_id(),
                    _statuses([s.value for s in JobStatus]),
                    _query(
                        "rule",
                        {"type": "array", "items": {"type": "string", "pattern": NO_NUL}},
                        "only jobs of these rules; repeat it or separate with commas",
                    ),
                    *_paging("jobs"),
                ],
                **_reads(
                    "A workflow's jobs, in the order they started",
                    _json(ref("JobList"), "a page"),
                    query=True,
                ),
            }
        },
        "/api/workflow/{id}/job/{jobid}": {
            "get": {
                "parameters": [
                    _workflow_id(),
                    {
                        "name": "jobid",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
                        "description": "Snakemake's job id within the run",
                        "example": 1,
                    },
                ],
                **_reads("One job", job),
            }
        },
        "/api/workflow/{id}/rules": {
            "get": {
                "parameters": [_workflow_id()],
                **_reads(
                    "Per rule: how many jobs are done, running, failed, waiting",
                    _json(
                        obj({"rules": {"type": "array", "items": ref("Rule")}}),
                        "in pipeline order: by first job, then planned rules not seen yet",
                    ),
                ),
            }
        },
        "/api/workflow/{id}/dag": {
            "get": {
                "parameters": [_workflow_id()],
                **_reads(
                    "The rule graph, each rule with its job counts",
                    _json(ref("RuleGraph"), "the graph's rules first, then other rules with jobs"),
                ),
            }
        },
        "/api/workflow/{id}/grid": {
            "get": {
                "parameters": [
                    _workflow_id(),
                    _query("key", TEXT, "the wildcard to make rows by (default: most values)"),
                ],
                **_reads("Datasets x rules: each dataset's job per rule", _json(ref("Grid"), "")),
            }
        },
        "/api/workflow/{id}/timeline": {
            "get": {
                "parameters": [_workflow_id()],
                **_reads("Every attempt of every job on a time axis", _json(ref("Timeline"), "")),
            }
        },
        "/api/workflow/{id}/trace.tsv": {
            "get": {
                "parameters": [_workflow_id()],
                **_reads(
                    "Every attempt of every job, one tab-separated row each",
                    {
                        "description": "a header row, then a row per attempt",
                        "content": {TSV: {"schema": {"type": "string"}}},
                    },
                ),
            }
        },
        "/api/workflow/{id}/cancel": {"post": {"parameters": [_workflow_id()], **cancel}},
        **_client_paths(),
    }


def _client_paths() -> dict[str, Schema]:
    envelope_form = {
        "type": "object",
        "properties": {
            "msg": {
                "type": "string",
                "minLength": 1,
                "description": "a JSON-encoded object with a level",
            },
            "timestamp": {"type": "string", "description": "the client's time.asctime()"},
            "id": {
                "type": "string",
                "pattern": DIGITS,
                "description": "the id /create_workflow returned",
            },
        },
        "required": ["msg", "id"],
    }
    envelope_json = {
        "type": "object",
        "properties": {
            "msg": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "object"}]},
            "timestamp": {"type": "string"},
            "id": {
                "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": DIGITS}]
            },
        },
        "required": ["msg", "id"],
    }
    registration = {
        "type": "object",
        "properties": {name: TEXT for name in RUN_FIELDS},
    }
    return {
        "/create_workflow": {
            "get": {
                "summary": "Register a run (called by Snakemake)",
                "description": (
                    "Snakemake 7/8 send a body with the command line, working directory and "
                    "Snakefile, as a form or as JSON; a body panoptes cannot read is ignored."
                ),
                "parameters": [
                    _query(
                        "workflow_id",
                        {"type": "string", "maxLength": MAX_NAME_CHARS},
                        "the stable id (name) of the run",
                    ),
                    _query(
                        "name",
                        {"type": "string", "maxLength": MAX_NAME_CHARS},
                        "the same, from older clients and --wms-monitor-arg name=...",
                    ),
                ],
                "requestBody": {
                    "required": False,
                    "content": {JSON: {"schema": registration}, FORM: {"schema": registration}},
                },
                "responses": {
                    "200": _json(ref("Workflow"), "the new (or reused) workflow"),
                    "400": _error(f"the workflow id is longer than {MAX_NAME_CHARS} characters"),
                    "401": UNAUTHORIZED,
                    "403": CROSS_SITE,
                },
            }
        },
        "/update_workflow_status": {
            "post": {
                "summary": "One message of a run (called by Snakemake)",
                "description": (
                    "Snakemake 7/8 abort the user's workflow on a 401/403/404/500 from here, "
                    "so a message panoptes cannot use is answered 400, 413, 415 or 422; they "
                    "print it and go on. Snakemake 7.32 sends JSON without a Content-Type."
                ),
                "requestBody": {
                    "required": True,
                    "content": {FORM: {"schema": envelope_form}, JSON: {"schema": envelope_json}},
                },
                "responses": {
                    "200": _json(
                        obj({"status": {"type": "string", "enum": ["ok", "duplicate"]}}),
                        "stored, or dropped as the duplicate Snakemake 8 sends",
                    ),
                    "400": _error("the message is malformed; nothing was stored"),
                    "401": UNAUTHORIZED,
                    "403": CROSS_SITE,
                    "413": _error(
                        "the body is larger than PANOPTES_MAX_BODY_BYTES, or a job_started "
                        f"lists more than {MAX_JOBS_PER_MESSAGE:,} jobs"
                    ),
                    "415": MEDIA_TYPE,
                    "422": _error("no workflow has that id: call /create_workflow first"),
                },
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "panoptes",
            "version": __version__,
            "description": (
                "Live monitoring of Snakemake workflows. Errors are "
                '{"error": ..., "detail": ...} with a 4xx status.'
            ),
        },
        "paths": {**_paths(), **notification_paths()},
        "components": {
            "schemas": {**schemas(), **notification_schemas()},
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "PANOPTES_TOKEN, when the server has one",
                }
            },
        },
        # The token is optional: a server without PANOPTES_TOKEN needs none.
        "security": [{}, {"token": []}],
    }
