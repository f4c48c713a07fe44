/*
 * grid.js: the workflow page's datasets x rules grid (GET /api/workflow/<id>/grid, then kept
 * cell by cell from the feed's job.updated).
 *
 * Every row is kept in memory, but only the rows in view of the .grid-scroll box are in the
 * DOM (with a spacer row above and below standing in for the others), so 1,000 samples or
 * more stay quick. A live update changes the row's data whether or not it is drawn; a row
 * is drawn from its data when it scrolls into view. Rows with a failure come first, also
 * when the failure comes live.
 *
 * Text from users (wildcard values, rule names) is set with textContent and kept in Maps,
 * never put into a selector.
 *
 * The object datasetGrid(workflowId) returns:
 *   update(job)        a job from the feed (job.updated), drawn where it belongs
 *   reset()            the run started over (workflow.reset): fetched again
 *   focusRule(rule)    one rule's column highlighted (class "focused" on its header and its
 *                      cells), and the row filter ("with a failure", "not done yet") asks
 *                      about that rule's cell alone; focusRule(null) ends it. For the rule
 *                      graph. Clearing it from the grid's own button fires "grid:focus"
 *                      (detail: {rule: null}) on #grid-section.
 */
(function () {
  "use strict";

  // Which job a cell shows when several share it (shapes.py _CELL_ORDER twins it).
  const CELL_ORDER = {Error: 0, Running: 1, Waiting: 2, Done: 3};
  const OVERSCAN = 12;  // rows drawn beyond the box's edges, so a scroll shows no gap
  const ROW_GUESS = 28;  // px, until a drawn row is measured
  const REFETCH_MS = 1500;  // a cell the server summed up (several jobs) changed: ask again

  // S2 before S10 (shapes.py _natural twins it, so live rows fall where the server puts them).
  function naturalKey(text) {
    return text.split(/(\d+)/).map((part, i) => (i % 2 ? [0, Number(part)] : [1, part]));
  }

  function compareKeys(a, b) {
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      if (a[i][0] !== b[i][0]) return a[i][0] - b[i][0];
      if (a[i][1] < b[i][1]) return -1;
      if (a[i][1] > b[i][1]) return 1;
    }
    return a.length - b.length;
  }

  function compareRows(a, b) {
    return (b.failed > 0) - (a.failed > 0) || compareKeys(a.sortKey, b.sortKey);
  }

  // A cell's most telling job.
  function shownJob(cell) {
    let best = null;
    if (!cell) return best;
    for (const job of cell.jobs.values()) {
      if (best === null || CELL_ORDER[job.status] < CELL_ORDER[best.status]) best = job;
    }
    return best;
  }

  function fetchGrid(workflowId, query) {
    return fetch("/api/workflow/" + workflowId + "/grid" + query, {credentials: "same-origin"})
      .then((response) => {
        if (!response.ok) throw new Error("grid: " + response.status);
        return response.json();
      });
  }

  // The workflow page's grid is asked for as soon as this script runs, before pages.js
  // sets the rest of the page up; datasetGrid takes it (benchmarks/glance.py: first render).
  let early = null;
  const page = document.body.dataset;
  if (page.page === "workflow" && page.workflowId) {
    const workflowId = Number(page.workflowId);
    early = {workflowId, data: fetchGrid(workflowId, "")};
    early.data.catch(() => {});  // seen by datasetGrid; not an unhandled rejection here
  }

  function datasetGrid(workflowId) {
    const section = document.getElementById("grid-section");
    const scroller = section.querySelector(".grid-scroll");
    const table = document.getElementById("dataset-grid");
    const picker = document.getElementById("grid-key");
    const find = document.getElementById("grid-find");
    const focusNote = document.getElementById("grid-focus");
    const foot = document.getElementById("grid-foot");
    const filters = section.querySelectorAll('input[name="grid-filter"]');
    const counts = {};
    for (const node of section.querySelectorAll("[data-count]")) counts[node.dataset.count] = node;

    let grid = null;  // {key, keys, rules, other}
    let loading = null;  // the fetch under way
    let waiting = [];  // events that came while it was
    let refetchTimer = 0;
    let rows = new Map();  // wildcard value -> row
    let order = [];  // every row, failed first
    let orderDirty = false;
    let visible = [];  // the rows the filter lets through, in order
    let drawn = [];  // the rows in the DOM now
    let drawnKey = "";
    let headCells = new Map();  // rule -> its <th>
    let rowHeight = 0;
    let keyOption = null;  // the picker's option for the key: its count follows the rows
    let scheduled = 0;
    const view = {filter: "all", find: "", focus: null};

    // ---- the data

    function makeRow(value) {
      const row = {
        value, sortKey: naturalKey(value), cells: new Map(),
        done: 0, failed: 0, tr: null, tds: null, dirty: true,
      };
      rows.set(value, row);
      order.push(row);
      orderDirty = true;
      return row;
    }

    function recount(row) {
      const wasFailed = row.failed > 0;
      row.done = 0;
      row.failed = 0;
      for (const cell of row.cells.values()) {
        const job = shownJob(cell);
        if (job && job.status === "Done") row.done++;
        if (job && job.status === "Error") row.failed++;
      }
      if (wasFailed !== row.failed > 0) orderDirty = true;
      row.dirty = true;
    }

    function take(data) {
      grid = {key: data.key, keys: new Map(Object.entries(data.keys || {})),
        rules: data.rules || [], other: data.other_rules || []};
      rows = new Map();
      order = [];
      for (const item of data.rows || []) {
        const row = makeRow(String(item.wildcards[data.key]));
        for (const [rule, cell] of Object.entries(item.cells)) {
          row.cells.set(rule, {jobs: new Map([[cell.jobid, cell]]), summed: cell.jobs});
        }
        recount(row);
      }
      headCells = new Map();
      drawn = [];
      drawnKey = "";
      table.textContent = "";
    }

    function place(job) {
      const wildcards = job.wildcards || {};
      if (grid.key === null && Object.keys(wildcards).length) {
        load(null);  // the first job with wildcards: the server names the key
        return;
      }
      for (const name of Object.keys(wildcards)) {
        if (!grid.keys.has(name)) { grid.keys.set(name, null); drawPicker(); }
      }
      const value = Object.hasOwn(wildcards, grid.key) ? wildcards[grid.key] : undefined;
      if (value === undefined || value === null || !job.rule) {
        if (job.rule && !grid.other.includes(job.rule) && !grid.rules.includes(job.rule)) {
          grid.other.push(job.rule);
          drawFoot();
        }
        return;
      }
      if (!grid.rules.includes(job.rule)) {
        grid.rules.push(job.rule);  // a rule new to the run: a new column
        grid.other = grid.other.filter((rule) => rule !== job.rule);
        headCells = new Map();
        for (const row of rows.values()) { row.tr = null; row.dirty = true; }
        drawFoot();
      }
      const row = rows.get(String(value)) || makeRow(String(value));
      let cell = row.cells.get(job.rule);
      if (!cell) row.cells.set(job.rule, cell = {jobs: new Map(), summed: 0});
      // The server sent one job of a cell with several: only it can say what the cell is now.
      if (cell.summed > 1) refetchSoon();
      cell.jobs.set(job.jobid, {jobid: job.jobid, status: job.status, attempt: job.attempt});
      recount(row);
      schedule();
    }

    // ---- matching the filter

    function cellStatus(row, rule) {
      const job = shownJob(row.cells.get(rule));
      return job ? job.status : null;
    }

    function focused() {
      return view.focus !== null && grid.rules.includes(view.focus) ? view.focus : null;
    }

    function isFailed(row, rule) {
      return rule === null ? row.failed > 0 : cellStatus(row, rule) === "Error";
    }

    function isPending(row, rule) {
      return rule === null ? row.done < grid.rules.length : cellStatus(row, rule) !== "Done";
    }

    function matches(row, rule) {
      if (view.find && !row.value.toLowerCase().includes(view.find)) return false;
      if (view.filter === "failed") return isFailed(row, rule);
      if (view.filter === "pending") return isPending(row, rule);
      return true;
    }

    // ---- drawing

    function schedule() {
      if (!scheduled) scheduled = requestAnimationFrame(flush);
    }

    function flush() {
      if (scheduled) cancelAnimationFrame(scheduled);
      scheduled = 0;
      if (grid === null) return;
      if (orderDirty) { order.sort(compareRows); orderDirty = false; }
      const rule = focused();
      let failed = 0;
      let pending = 0;
      visible = [];
      for (const row of order) {
        if (isFailed(row, rule)) failed++;
        if (isPending(row, rule)) pending++;
        if (matches(row, rule)) visible.push(row);
      }
      counts.all.textContent = String(order.length);
      counts.failed.textContent = String(failed);
      counts.pending.textContent = String(pending);
      if (keyOption) keyOption.textContent = grid.key + " (" + rows.size + ")";
      section.hidden = rows.size === 0;  // first: a hidden row measures 0 px
      if (!headCells.size) drawHead();
      drawWindow(false);
    }

    function drawHead() {
      const thead = table.tHead || table.createTHead();
      const tr = document.createElement("tr");
      headCells = new Map();
      const keyCell = document.createElement("th");
      keyCell.textContent = grid.key;
      keyCell.scope = "col";
      // The widest name's room, so the column keeps its width as rows scroll past.
      let longest = 4;
      for (const value of rows.keys()) longest = Math.max(longest, value.length);
      keyCell.style.minWidth = Math.min(longest, 28) + 1 + "ch";
      tr.appendChild(keyCell);
      for (const rule of grid.rules) {
        const th = document.createElement("th");
        th.textContent = rule;
        th.scope = "col";
        if (rule === view.focus) th.classList.add("focused");
        tr.appendChild(th);
        headCells.set(rule, th);
      }
      const count = document.createElement("th");
      count.textContent = "done";
      count.scope = "col";
      tr.appendChild(count);
      thead.replaceChildren(tr);
      if (!table.tBodies.length) table.appendChild(document.createElement("tbody"));
      drawnKey = "";
    }

    function drawCell(td, cell, rule) {
      const job = shownJob(cell);
      td.textContent = "";
      td.className = "cell" + (job ? " status-" + job.status.toLowerCase() : "")
        + (rule === view.focus ? " focused" : "");
      if (!job) return;
      const a = document.createElement("a");
      a.href = "/workflow/" + workflowId + "/job/" + job.jobid;
      const jobs = Math.max(cell.summed, cell.jobs.size);
      const retried = job.attempt > 1 ? " (attempt " + job.attempt + ")" : "";
      a.title = job.status + retried + (jobs > 1 ? ", " + jobs + " jobs" : "");
      a.textContent = job.status === "Error" ? "✕" : job.status === "Done" ? "✓" : "•";
      if (job.attempt > 1) a.classList.add("retried");
      td.appendChild(a);
    }

    function drawRow(row) {
      if (row.tr === null) {
        const tr = document.createElement("tr");
        tr.dataset.key = row.value;
        const th = document.createElement("th");
        th.scope = "row";
        th.textContent = row.value;
        th.title = row.value;
        tr.appendChild(th);
        row.tds = new Map();  // rule -> its cell (rule names are the user's: no selectors)
        for (const rule of grid.rules) {
          const td = document.createElement("td");
          td.dataset.rule = rule;
          tr.appendChild(td);
          row.tds.set(rule, td);
        }
        tr.appendChild(document.createElement("td"));
        row.tr = tr;
      }
      for (const [rule, td] of row.tds) drawCell(td, row.cells.get(rule), rule);
      row.tr.lastChild.textContent = row.done + "/" + grid.rules.length;
      row.dirty = false;
    }

    function spacer(height) {
      const tr = document.createElement("tr");
      tr.className = "grid-spacer";
      tr.setAttribute("aria-hidden", "true");
      const td = document.createElement("td");
      td.colSpan = grid.rules.length + 2;
      td.style.height = height + "px";
      tr.appendChild(td);
      return tr;
    }

    // Why no row shows.
    function noneNote() {
      const tr = spacer(0);
      tr.className = "grid-none";
      tr.removeAttribute("aria-hidden");
      const rule = focused();
      const where = rule === null ? "" : " in " + rule;
      const named = view.find ? " named like “" + find.value.trim() + "”" : "";
      tr.firstChild.textContent = view.filter === "failed"
        ? "No dataset" + named + " failed" + where + "."
        : view.filter === "pending" ? "Every dataset" + named + " is done" + where + "."
          : "No dataset is named like “" + find.value.trim() + "”.";
      return tr;
    }

    // The rows in view of the scroll box (and OVERSCAN more each way), the rest as spacers.
    function drawWindow(scrolled) {
      const tbody = table.tBodies[0];
      const height = rowHeight || ROW_GUESS;
      const top = Math.max(0, scroller.scrollTop - (table.tHead ? table.tHead.offsetHeight : 0));
      // As tall as the box may grow (its max-height), not as it is: it grows as rows come.
      const most = parseFloat(getComputedStyle(scroller).maxHeight);
      const box = Math.max(scroller.clientHeight, isNaN(most) ? window.innerHeight : most);
      const first = Math.max(0, Math.floor(top / height) - OVERSCAN);
      const last = Math.min(visible.length, Math.ceil((top + box) / height) + OVERSCAN);
      const wanted = visible.slice(first, last);
      const key = first + ":" + last + ":" + visible.length;
      const same = key === drawnKey && wanted.every((row, i) => row === drawn[i] && row.tr);
      if (same) {
        for (const row of wanted) if (row.dirty) drawRow(row);
        return;
      }
      const keep = new Set(wanted);
      for (const row of drawn) if (!keep.has(row)) { row.tr = null; row.tds = null; }
      const nodes = [];
      if (first > 0) nodes.push(spacer(first * height));
      wanted.forEach((row, i) => {
        if (row.tr === null || row.dirty) drawRow(row);
        row.tr.setAttribute("aria-rowindex", String(first + i + 2));
        nodes.push(row.tr);
      });
      if (last < visible.length) nodes.push(spacer((visible.length - last) * height));
      if (!visible.length && rows.size) nodes.push(noneNote());
      tbody.replaceChildren(...nodes);
      table.setAttribute("aria-rowcount", String(visible.length + 1));
      drawn = wanted;
      drawnKey = key;
      if (!rowHeight && wanted.length) {
        rowHeight = wanted[0].tr.getBoundingClientRect().height || ROW_GUESS;
        if (Math.abs(rowHeight - ROW_GUESS) > 1 && !scrolled) { drawnKey = ""; drawWindow(true); }
      }
    }

    function drawPicker() {
      picker.parentElement.hidden = grid.keys.size < 2;
      picker.textContent = "";
      keyOption = null;
      for (const [name, known] of grid.keys) {
        const option = document.createElement("option");
        option.value = name;
        const count = name === grid.key ? rows.size : known;
        option.textContent = name + (count === null ? "" : " (" + count + ")");
        option.selected = name === grid.key;
        if (option.selected) keyOption = option;
        picker.appendChild(option);
      }
    }

    function drawFoot() {
      foot.hidden = grid.other.length === 0;
      foot.textContent = grid.other.length
        ? "Not in the grid (their jobs have no " + grid.key + " wildcard): "
          + grid.other.join(", ")
        : "";
    }

    function drawFocus() {
      const rule = view.focus;
      for (const [name, th] of headCells) th.classList.toggle("focused", name === rule);
      for (const row of drawn) row.dirty = true;
      focusNote.hidden = rule === null;
      if (rule !== null) {
        focusNote.querySelector("strong").textContent = rule;
        focusNote.querySelector("span").textContent = grid && grid.rules.includes(rule)
          ? "the filters ask about this rule's cells"
          : "not in the grid";
        const th = headCells.get(rule);
        if (th) {  // into view sideways, without moving the page
          const box = scroller.getBoundingClientRect();
          const at = th.getBoundingClientRect();
          if (at.left < box.left || at.right > box.right) {
            scroller.scrollLeft += at.left - box.left - box.width / 2 + at.width / 2;
          }
        }
      }
    }

    // ---- fetching

    function load(key, keepScroll) {
      clearTimeout(refetchTimer);
      const query = key ? "?key=" + encodeURIComponent(key) : "";
      const scrollTop = scroller.scrollTop;
      const first = early !== null && early.workflowId === workflowId && !key ? early : null;
      early = null;
      const started = (first ? first.data : fetchGrid(workflowId, query))
        .then((data) => {
          if (loading !== started) return;
          take(data);
          drawPicker();
          drawFoot();
          drawFocus();
          scroller.scrollTop = keepScroll ? scrollTop : 0;
          flush();
          loading = null;
          const queued = waiting;
          waiting = [];
          if (grid.key !== null) queued.forEach(place);
        })
        .catch(() => {
          if (loading !== started) return;
          loading = null;
          if (grid === null) section.hidden = true;
          const queued = waiting;
          waiting = [];
          if (grid !== null) queued.forEach(place);
        });
      loading = started;
    }

    function refetchSoon() {
      if (refetchTimer || loading) return;
      refetchTimer = setTimeout(() => { refetchTimer = 0; load(grid.key, true); }, REFETCH_MS);
    }

    // ---- the controls

    picker.addEventListener("change", () => load(picker.value, false));
    for (const input of filters) {
      input.addEventListener("change", () => {
        if (!input.checked) return;
        view.filter = input.value;
        scroller.scrollTop = 0;
        flush();
      });
    }
    find.addEventListener("input", () => {
      view.find = find.value.trim().toLowerCase();
      scroller.scrollTop = 0;
      flush();
    });
    focusNote.querySelector("button").addEventListener("click", () => {
      api.focusRule(null);
      section.dispatchEvent(new CustomEvent("grid:focus", {detail: {rule: null}}));
    });
    let scrolling = 0;
    scroller.addEventListener("scroll", () => {
      if (grid === null || scrolling) return;
      scrolling = requestAnimationFrame(() => { scrolling = 0; drawWindow(true); });
    }, {passive: true});

    load(null, false);

    const api = {
      update(job) {
        if (loading) waiting.push(job);
        else if (grid !== null) place(job);
      },
      reset() {
        rows = new Map();
        order = [];
        load(null, false);
      },
      focusRule(rule) {
        view.focus = rule === undefined || rule === "" ? null : rule;
        if (grid !== null) { drawFocus(); flush(); }
      },
    };
    return api;
  }

  window.PanoptesViews = Object.assign(window.PanoptesViews || {}, {datasetGrid});
})();
