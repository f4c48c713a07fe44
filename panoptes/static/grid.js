/*
 * grid.js: the workflow page's datasets x rules grid (GET /api/workflow/<id>/grid, then kept
 * cell by cell from the feed's job.updated). Every value is set with textContent.
 */
(function () {
  "use strict";

  // ---- datasets x rules (GET /api/workflow/<id>/grid, then kept by job.updated)

  // Which job a cell shows when several share it (shapes.py _CELL_ORDER twins it).
  const CELL_ORDER = {Error: 0, Running: 1, Waiting: 2, Done: 3};

  function datasetGrid(workflowId) {
    const section = document.getElementById("grid-section");
    const table = document.getElementById("dataset-grid");
    let grid = null;
    const waiting = [];  // events that came before the grid did
    const rows = new Map();  // key value -> {wildcards, tr, cells: Map(rule -> Map(jobid -> job))}

    function cellStatus(jobs) {
      let best = null;
      for (const job of jobs.values()) {
        if (best === null || CELL_ORDER[job.status] < CELL_ORDER[best.status]) best = job;
      }
      return best;
    }

    function drawCell(td, jobs) {
      const job = cellStatus(jobs);
      td.textContent = "";
      td.className = "cell" + (job ? " status-" + job.status.toLowerCase() : "");
      if (!job) return;
      const a = document.createElement("a");
      a.href = "/workflow/" + workflowId + "/job/" + job.jobid;
      const retried = job.attempt > 1 ? " (attempt " + job.attempt + ")" : "";
      a.title = job.status + retried + (jobs.size > 1 ? ", " + jobs.size + " jobs" : "");
      a.textContent = job.status === "Error" ? "✕" : job.status === "Done" ? "✓" : "•";
      if (job.attempt > 1) a.classList.add("retried");
      td.appendChild(a);
    }

    function drawCount(row) {
      let done = 0;
      for (const jobs of row.cells.values()) {
        const job = cellStatus(jobs);
        if (job && job.status === "Done") done++;
      }
      row.tr.lastChild.textContent = done + "/" + grid.rules.length;
    }

    function addRow(value, wildcards) {
      const tr = document.createElement("tr");
      tr.dataset.key = value;
      const th = document.createElement("th");
      th.textContent = value;
      tr.appendChild(th);
      const tds = new Map();  // rule -> its cell (rule names are the user's: no selectors)
      for (const rule of grid.rules) {
        const td = document.createElement("td");
        td.dataset.rule = rule;
        td.className = "cell";
        tr.appendChild(td);
        tds.set(rule, td);
      }
      tr.appendChild(document.createElement("td"));
      table.tBodies[0].appendChild(tr);
      const row = {wildcards, tr, tds, cells: new Map()};
      rows.set(value, row);
      return row;
    }

    function render() {
      table.textContent = "";
      const head = table.createTHead().insertRow();
      for (const name of [grid.key, ...grid.rules, "done"]) {
        const th = document.createElement("th");
        th.textContent = name;
        head.appendChild(th);
      }
      table.appendChild(document.createElement("tbody"));
      const kept = Array.from(rows.entries());
      rows.clear();
      for (const [value, old] of kept) {
        const row = addRow(value, old.wildcards);
        row.cells = old.cells;
        for (const [rule, jobs] of row.cells) drawCell(row.tds.get(rule), jobs);
        drawCount(row);
      }
      section.hidden = rows.size === 0;
    }

    function place(job) {
      const value = job.wildcards ? job.wildcards[grid.key] : undefined;
      if (value === undefined || !job.rule) return;
      if (!grid.rules.includes(job.rule)) {
        grid.rules.push(job.rule);  // a rule new to the run: a new column
        render();
      }
      const row = rows.get(String(value)) || addRow(String(value), {[grid.key]: value});
      if (!row.cells.has(job.rule)) row.cells.set(job.rule, new Map());
      const jobs = row.cells.get(job.rule);
      jobs.set(job.jobid, {jobid: job.jobid, status: job.status, attempt: job.attempt});
      drawCell(row.tds.get(job.rule), jobs);
      drawCount(row);
      section.hidden = false;
    }

    fetch("/api/workflow/" + workflowId + "/grid", {credentials: "same-origin"})
      .then((response) => response.json())
      .then((data) => {
        grid = {key: data.key, rules: data.rules};
        for (const item of data.rows || []) {
          const value = String(item.wildcards[data.key]);
          const row = {wildcards: item.wildcards, tr: null, tds: null, cells: new Map()};
          for (const [rule, cell] of Object.entries(item.cells)) {
            row.cells.set(rule, new Map([[cell.jobid, cell]]));
          }
          rows.set(value, row);
        }
        render();
        if (grid.key !== null) waiting.splice(0).forEach(place);
      })
      .catch(() => { section.hidden = true; });

    return {
      update(job) {
        if (grid === null) {
          waiting.push(job);
        } else if (grid.key === null) {
          // No wildcards until now: the first job with some names the key.
          const names = Object.keys(job.wildcards || {});
          if (names.length) { grid.key = names[0]; render(); place(job); }
        } else {
          place(job);
        }
      },
    };
  }

  window.PanoptesViews = Object.assign(window.PanoptesViews || {}, {datasetGrid});
})();
