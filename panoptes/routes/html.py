"""HTML helpers for the pages: the pieces every row repeats, and synchronous rendering."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment
from markupsafe import Markup, escape
from quart import current_app

from .. import __version__
from ..db import json_dumps


def badge(status: str | None) -> Markup:
    """A status as the pages show it: <span class="badge status-done">Done</span>."""
    css = escape((status or "").lower())
    return Markup(f'<span class="badge status-{css}" data-status>{escape(status)}</span>')


def time_tag(value: str | None) -> Markup:
    """An ISO time as a <time> element: to the second, or a dash when there is none."""
    shown = escape(value[:19].replace("T", " ")) if value else "\u2013"
    return Markup(f'<time datetime="{escape(value or "")}">{shown}</time>')


def bar(done: int, total: int, running: int = 0, error: int = 0) -> Markup:
    """A progress bar: done, running and failed shares of the total (pages.js setBar moves
    it live)."""
    whole = total if total and total > 0 else 1
    done_, running_, error_ = (f"{100 * n / whole:.2f}" for n in (done, running, error))
    ahead = f"{100 * (done + running) / whole:.2f}"
    return Markup(
        '<svg class="bar" viewBox="0 0 100 10" preserveAspectRatio="none" role="img"'
        ' aria-label="progress">\n'
        '  <rect class="bar-bg" x="0" y="0" width="100" height="10"></rect>\n'
        f'  <rect class="bar-done" data-bar="done" x="0" y="0" height="10" width="{done_}">'
        "</rect>\n"
        f'  <rect class="bar-running" data-bar="running" y="0" height="10" x="{done_}"'
        f' width="{running_}"></rect>\n'
        f'  <rect class="bar-error" data-bar="error" y="0" height="10" x="{ahead}"'
        f' width="{error_}"></rect>\n'
        "</svg>"
    )


# What a benchmark: file measures, as the job page names it (pages.js USED twins it).
USED = (
    ("s", "wall time", "s"),
    ("cpu_time", "CPU time", "s"),
    ("mean_load", "mean CPU load", "%"),
    ("max_rss", "max RSS", "MB"),
    ("max_vms", "max VMS", "MB"),
    ("max_uss", "max USS", "MB"),
    ("max_pss", "max PSS", "MB"),
    ("io_in", "read", "MB"),
    ("io_out", "written", "MB"),
    ("repeats", "runs", ""),
)


def resource_rows(job: dict[str, Any]) -> Markup:
    """The job page's resources: what the job asked for beside what it used (its benchmark
    file, plugin 1.0.0), a pair per row (pages.js resourceRows twins it)."""
    asked = [("threads", job["threads"])] if job.get("threads") is not None else []
    asked += list((job.get("resources") or {}).items())
    measured = job.get("benchmark") or {}
    used = [
        (label, f"{measured[key]:g} {unit}".strip()) for key, label, unit in USED if key in measured
    ]
    if not asked and not used:
        return Markup('<tr><td class="muted" colspan="4">none known</td></tr>')
    rows = []
    for index in range(max(len(asked), len(used))):
        cells = [*(asked[index] if index < len(asked) else ("", ""))]
        cells += [*(used[index] if index < len(used) else ("", ""))]
        rows.append("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + "</tr>")
    return Markup("".join(rows))


# A status badge's colours (the pages' own: done green, error red, running blue).
BADGE_COLOURS = {
    "Done": "#2f9e5b",
    "Error": "#c9372c",
    "Running": "#2f74c0",
    "Cancelled": "#b7791f",
    "Stale": "#6b7280",
}
_BADGE_CHAR_PX = 7  # Verdana 11 px, about the width of an average character


def badge_svg(wf: dict[str, Any]) -> str:
    """A shields-style SVG badge of a workflow (as the API shows it): its name | its status
    and done/total."""
    status = str(wf["status"])
    label, value = str(wf["name"])[:40], f"{status} {wf['jobs_done']}/{wf['jobs_total']}"
    left, right = 10 + _BADGE_CHAR_PX * len(label), 10 + _BADGE_CHAR_PX * len(value)
    colour = BADGE_COLOURS.get(status, "#6b7280")
    text = f"{escape(label)}: {escape(value)}"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + right}" height="20" '
        f'role="img" aria-label="{text}"><title>{text}</title>'
        f'<rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        '<g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="5" y="14">{escape(label)}</text>'
        f'<text x="{left + 5}" y="14">{escape(value)}</text></g></svg>'
    )


# Small pieces of HTML every row repeats, as Python functions: a Jinja macro call costs
# several times as much, and a workflow page makes hundreds.
PAGE_HELPERS = {
    "resource_rows": resource_rows,
    "badge": badge,
    "bar": bar,
    "time": time_tag,
}


class Row(dict[str, Any]):
    """A dict whose keys are also its attributes, for the rows a page repeats: Jinja reads
    `job.status` as an attribute first, and on a plain dict that lookup fails and costs an
    exception before the key is tried (about a tenth of a workflow page). Serialized as
    the dict it is."""

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.__dict__ = self


async def render_page(template: str, **context: Any) -> str:
    """A page, rendered synchronously with the app's templates, context and globals.

    Quart renders templates in Jinja's async mode, where every macro call and expression
    is awaited: on a workflow page (a macro per job row, and a few within each) that was
    most of the request. The pages call nothing asynchronous, so they render in a sync
    overlay of the app's environment (same loader, filters and globals such as url_for),
    whose tojson writes with orjson."""
    app = current_app
    pages: Environment | None = app.extensions.get("panoptes.pages")
    if pages is None:
        pages = app.jinja_env.overlay(enable_async=False)
        pages.policies["json.dumps_function"] = lambda value, **_: json_dumps(value)
        pages.globals.update(PAGE_HELPERS)
        app.extensions["panoptes.pages"] = pages
    context.setdefault("version", __version__)
    await app.update_template_context(context)
    return pages.get_template(template).render(context)
