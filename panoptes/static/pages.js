/*
 * pages.js: keeps the server-rendered pages current from the websocket feed.
 * Rows are cloned from <template> elements the server renders with the same macros as
 * the rows themselves, and every value is set with textContent: user text is never HTML.
 */
(function () {
  "use strict";

  const body = document.body;
  const page = body.dataset.page;
  const startSeq = Number(body.dataset.seq || 0);

  // ---- formatting

  // One formatter for every time on the page: toLocaleString with options builds a new one
  // at each call, which a page of a few hundred times feels.
  const dateTime = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });

  function formatTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return dateTime.format(d);
  }

  function formatDuration(ms) {
    if (!(ms >= 0)) return "–";
    if (ms < 10000) return (ms / 1000).toFixed(1) + "s";
    let s = Math.round(ms / 1000);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + s + "s";
    return s + "s";
  }

  function describe(value) {
    if (value == null || value === "") return "–";
    if (Array.isArray(value)) return value.length ? value.join(", ") : "–";
    if (typeof value === "object") {
      const parts = Object.entries(value).map(([k, v]) => k + "=" + v);
      return parts.length ? parts.join(", ") : "–";
    }
    return String(value);
  }

  // "3 min ago", for times of the last day; the date and time beyond that.
  function relativeTime(iso) {
    const at = Date.parse(iso);
    if (!iso || isNaN(at)) return formatTime(iso);
    const seconds = Math.round((Date.now() - at) / 1000);
    if (seconds < -60 || seconds >= 86400) return formatTime(iso);
    if (seconds < 10) return "just now";
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    const hours = Math.floor(seconds / 3600);
    const minutes = Math.floor((seconds % 3600) / 60);
    return hours + " h " + (minutes ? minutes + " min " : "") + "ago";
  }

  // A <time>: how long ago, with the absolute time on hover.
  function setTime(el, iso) {
    el.setAttribute("datetime", iso || "");
    el.textContent = iso ? relativeTime(iso) : formatTime(iso);
    el.title = iso ? formatTime(iso) : "";
  }

  function refreshTimes(scope) {
    for (const el of scope.querySelectorAll("time[datetime]")) {
      const iso = el.getAttribute("datetime");
      if (iso) setTime(el, iso);
    }
  }

  function refreshDurations(scope) {
    const now = Date.now();
    for (const el of scope.querySelectorAll("[data-duration]")) {
      const start = el.dataset.start;
      if (!start) { el.textContent = "–"; continue; }
      const end = el.dataset.end ? Date.parse(el.dataset.end) : now;
      el.textContent = formatDuration(end - Date.parse(start));
    }
  }

  function setBar(svg, done, total, running, error) {
    if (!svg) return;
    const t = total > 0 ? total : 1;
    const parts = [["done", done || 0], ["running", running || 0], ["error", error || 0]];
    let x = 0;
    for (const [name, value] of parts) {
      const rect = svg.querySelector('[data-bar="' + name + '"]');
      const width = Math.max(0, Math.min(100 - x, (100 * value) / t));
      if (rect) {
        rect.setAttribute("x", x.toFixed(2));
        rect.setAttribute("width", width.toFixed(2));
      }
      x += width;
    }
  }

  // A running workflow's time left (GET /api/workflow/<id> eta_seconds; null: unknown).
  function formatEta(seconds) {
    if (seconds == null) return null;
    if (seconds < 60) return "less than a minute left";
    const minutes = Math.round(seconds / 60);
    if (minutes < 90) return "about " + minutes + " min left";
    const hours = seconds / 3600;
    return "about " + (hours < 10 ? hours.toFixed(1) : Math.round(hours)) + " h left";
  }

  // The workflow page says when it is not known yet; a dashboard row says nothing then.
  function showEta(el, wf) {
    const text = wf.status === "Running" ? formatEta(wf.eta_seconds) : null;
    const onPage = el.tagName === "DD";
    el.textContent = text || (onPage ? "not known yet" : "");
    el.hidden = !onPage && !text;
  }

  // The feed's workflows carry no estimate (it costs a few queries): the page asks the API
  // for it when the run has moved, at most once per ETA_EVERY_MS for each workflow.
  const ETA_EVERY_MS = 5000;
  const etaAsked = new Map();  // workflow id -> timer
  function askEta(id, show) {
    if (etaAsked.has(id)) return;
    etaAsked.set(id, setTimeout(async () => {
      etaAsked.delete(id);
      const response = await fetch("/api/workflow/" + id, {credentials: "same-origin"});
      if (response.ok) show((await response.json()).workflow);
    }, ETA_EVERY_MS));
  }

  // Said to screen readers by the page's live region (base.html #announcer).
  function announce(text) {
    const announcer = document.getElementById("announcer");
    if (announcer) announcer.textContent = text;
  }

  function setStatus(el, status) {
    const before = el.dataset.status;
    el.dataset.status = status;
    if (before && before !== status && el.dataset.workflowId) {
      const name = el.querySelector('[data-field="name"]');
      announce((name ? name.textContent : "workflow " + el.dataset.workflowId) + " is now " + status);
    }
    const badge = el.querySelector("[data-status]");
    if (badge) {
      badge.textContent = status;
      badge.className = "badge status-" + String(status).toLowerCase();
    }
  }

  // Fill every [data-field], [data-time] and [data-duration] inside el from obj.
  function fill(el, obj) {
    for (const node of el.querySelectorAll("[data-field]")) {
      const key = node.dataset.field;
      if (!(key in obj)) continue;
      const value = obj[key];
      if (key === "error" && typeof value !== "number") {  // a rule's "error" is a count
        node.textContent = value || "";
        node.hidden = !value;
      } else if (key === "jobs_failed") {
        node.textContent = (value || 0) + " failed";
        node.hidden = !value;
      } else if (key === "label") {
        node.textContent = value || "";
        node.hidden = !value;
      } else if (key === "error_line") {
        node.textContent = value || "";
      } else if (key === "name" || key === "jobid" || key === "id") {
        node.textContent = value == null ? "" : String(value);
      } else if (key === "rule") {
        node.textContent = value || "(unnamed)";
      } else {
        node.textContent = describe(value);
      }
    }
    for (const node of el.querySelectorAll("[data-time]")) {
      const key = node.dataset.time;
      if (!(key in obj)) continue;
      const time = node.querySelector("time");
      if (time) setTime(time, obj[key]);
    }
    for (const node of el.querySelectorAll("[data-duration]")) {
      const from = node.dataset.from || "started_at";  // a job's whole time: first_started_at
      if (from in obj) node.dataset.start = obj[from] || "";
      if ("finished_at" in obj) node.dataset.end = obj.finished_at || "";
    }
    if ("status" in obj) setStatus(el, obj.status);
    refreshDurations(el);
  }

  function cloneTemplate(id) {
    const template = document.getElementById(id);
    return template.content.firstElementChild.cloneNode(true);
  }

  // ---- live indicator and user actions

  function connectIndicator(feed) {
    const indicator = document.getElementById("live-indicator");
    if (indicator.dataset.state === "closed") {
      // PANOPTES_PRIVATE_FEED and no token here: the feed would only be refused, again
      // and again. The page stays as it was served.
      feed.start = () => feed;
      return;
    }
    const set = (state) => {
      indicator.dataset.state = state;
      indicator.textContent = state;
    };
    feed.on("open", () => set("live"));
    feed.on("close", () => set("reconnecting"));
    // The server came back with another database: this page shows the old one's state.
    feed.on("reset", () => window.location.reload());
  }

  async function call(method, url, payload) {
    const options = {method, headers: {"X-Requested-With": "panoptes"}};
    if (payload !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(payload);
    }
    const response = await fetch(url, options);
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const error = await response.json();
        detail = error.detail || error.error || detail;
      } catch (err) { /* not JSON */ }
      window.alert("panoptes: " + detail);
      return false;
    }
    return true;
  }

  function bindActions(container, workflowIdOf, nameOf) {
    container.addEventListener("click", async (click) => {
      const button = click.target.closest("button[data-action]");
      if (!button) return;
      const id = workflowIdOf(button);
      if (!id) return;
      const url = "/api/workflow/" + id;
      const action = button.dataset.action;
      if (action === "rename") {
        const name = window.prompt("New name for workflow " + id, nameOf(button));
        if (name && name.trim()) await call("PUT", url, {name: name.trim()});
      } else if (action === "cancel") {
        if (window.confirm("Mark workflow " + id + " as cancelled? (Snakemake itself is not stopped.)")) {
          await call("POST", url + "/cancel");
        }
      } else if (action === "delete") {
        if (window.confirm("Delete workflow " + id + " and all its jobs?")) {
          if (await call("DELETE", url) && page !== "dashboard") window.location.assign("/");
        }
      }
    });
  }

  // ---- dashboard

  function dashboard() {
    const table = document.getElementById("workflows");
    const tbody = table.querySelector("tbody");
    const empty = document.getElementById("empty-state");
    const filterStatus = body.dataset.filterStatus || "";
    const filterQ = (body.dataset.filterQ || "").toLowerCase();
    const matches = (wf) =>
      (!filterStatus || wf.status === filterStatus) &&
      (!filterQ || wf.name.toLowerCase().includes(filterQ));
    const rowOf = (id) => tbody.querySelector('tr[data-workflow-id="' + id + '"]');

    function updateRow(row, wf) {
      fill(row, wf);
      row.querySelector('[data-field="progress"]').textContent = wf.jobs_done + " / " + wf.jobs_total;
      row.querySelector('a[data-field="name"]').href = "/workflow/" + wf.id;
      setBar(row.querySelector("svg.bar"), wf.jobs_done, wf.jobs_total, 0, wf.jobs_failed);
    }

    function upsert(wf) {
      let row = rowOf(wf.id);
      if (!matches(wf)) {
        if (row) row.remove();
      } else if (row) {
        updateRow(row, wf);
      } else {
        row = cloneTemplate("workflow-row-template");
        row.dataset.workflowId = wf.id;
        updateRow(row, wf);
        // Newest first: a new id goes above every smaller one.
        const after = Array.from(tbody.rows).find((r) => Number(r.dataset.workflowId) < wf.id);
        tbody.insertBefore(row, after || null);
      }
      showTable();
    }

    function showTable() {
      const any = tbody.rows.length > 0;
      table.hidden = !any;
      empty.hidden = any;
    }

    let statsTimer = null;
    function refreshCounts() {
      clearTimeout(statsTimer);
      statsTimer = setTimeout(async () => {
        const response = await fetch("/api/workflows/stats");
        if (!response.ok) return;
        const stats = await response.json();
        for (const el of document.querySelectorAll("[data-count]")) {
          const key = el.dataset.count;
          el.textContent = key === "total" ? stats.total : (stats.counts[key] || 0);
        }
      }, 200);
    }

    bindActions(tbody, (b) => b.closest("tr").dataset.workflowId,
      (b) => b.closest("tr").querySelector('[data-field="name"]').textContent);

    const feed = new PanoptesFeed({since: startSeq});
    connectIndicator(feed);
    feed.on("workflow.*", (event) => {
      if (event.type === "workflow.deleted") {
        const row = rowOf(event.workflow.id);
        if (row) row.remove();
        showTable();
      } else {
        upsert(event.workflow);
        const row = rowOf(event.workflow.id);
        if (row && event.workflow.status === "Running") {
          askEta(event.workflow.id, (wf) => showEta(row.querySelector("[data-eta]"), wf));
        } else if (row) {
          showEta(row.querySelector("[data-eta]"), event.workflow);
        }
      }
      refreshCounts();
    });
    // The estimates of the running workflows listed, once at the start.
    fetch("/api/workflows?status=Running&limit=100", {credentials: "same-origin"})
      .then((response) => (response.ok ? response.json() : {workflows: []}))
      .then((data) => {
        for (const wf of data.workflows) {
          const row = rowOf(wf.id);
          if (row) showEta(row.querySelector("[data-eta]"), wf);
        }
      });
    feed.on("resync", refreshCounts);
    feed.start();
  }

  // ---- workflow page

  function workflowPage() {
    const workflowId = Number(body.dataset.workflowId);
    const header = document.getElementById("workflow");
    const jobsBody = document.querySelector("#jobs tbody");
    const rulesTable = document.getElementById("rules");
    const rulesBody = rulesTable.querySelector("tbody");
    const filters = document.getElementById("job-filters");
    const jobsTable = document.getElementById("jobs");
    const pager = document.getElementById("job-pager");
    // The page shows one page of the jobs that match its filters (server-side paging, in
    // the order the jobs started); the rows are those on it.
    const offset = Number(jobsTable.dataset.offset);
    const pageSize = Number(jobsTable.dataset.pageSize);
    const statusFilter = jobsTable.dataset.filterStatus;
    const ruleFilter = jobsTable.dataset.filterRule;
    // Every rule's counts, kept current by rule.updated: how many jobs match the filters.
    const rules = new Map(JSON.parse(document.getElementById("initial-rules").textContent)
      .map((r) => [r.rule, r]));

    filters.querySelector('[data-action="filter"]').hidden = true;
    filters.addEventListener("change", () => filters.requestSubmit());

    function matches(job) {
      return (!statusFilter || job.status === statusFilter) &&
        (!ruleFilter || (job.rule || "") === ruleFilter);
    }

    function matchingCount() {
      let count = 0;
      for (const r of rules.values()) {
        if (ruleFilter && r.rule !== ruleFilter) continue;
        count += statusFilter ? r[statusFilter.toLowerCase()] || 0 : r.total;
      }
      return count;
    }

    function updatePager() {
      const count = matchingCount();
      const shown = jobsBody.rows.length;
      document.getElementById("job-count").textContent = String(count);
      pager.querySelector('[data-pager="range"]').textContent =
        shown ? (offset + 1) + "\u2013" + (offset + shown) + " of " + count : "";
      pager.querySelector('[data-pager="previous"]').hidden = offset === 0;
      pager.querySelector('[data-pager="next"]').hidden = offset + pageSize >= count;
    }

    function addRuleOption(rule) {
      const select = filters.elements.rule;
      if (!rule || Array.from(select.options).some((o) => o.value === rule)) return;
      const option = document.createElement("option");
      option.value = rule;
      option.textContent = rule;
      select.appendChild(option);
    }

    function upsertJob(job) {
      addRuleOption(job.rule || "");
      let row = jobsBody.querySelector('tr[data-jobid="' + job.jobid + '"]');
      if (!matches(job)) {
        // It left this filter (a Running job finished, say): the count follows with the
        // rule's counts.
        if (row) row.remove();
        return;
      }
      if (!row) {
        // A job new to this view goes at the end, if this page is the last one and has
        // room; otherwise it is on a later page, which the pager now offers.
        const throughTheEnd = offset + jobsBody.rows.length >= matchingCount();
        if (!throughTheEnd || jobsBody.rows.length >= pageSize) return;
        row = cloneTemplate("job-row-template");
        jobsBody.appendChild(row);
      }
      row.dataset.jobid = job.jobid;
      row.dataset.rule = job.rule || "";
      fill(row, job);
      row.querySelector('a[data-field="jobid"]').href = "/workflow/" + workflowId + "/job/" + job.jobid;
      updatePager();
    }

    function upsertRule(rule) {
      let row = Array.from(rulesBody.rows).find((r) => r.dataset.rule === rule.rule);
      if (!row) {
        // Rules come in pipeline order: a new one (its first job, or its plan) goes last.
        row = cloneTemplate("rule-row-template");
        row.dataset.rule = rule.rule;
        rulesBody.appendChild(row);
      }
      if (rule.total === 0 && rule.planned == null) {
        rules.delete(rule.rule);
        row.remove();
      } else {
        rules.set(rule.rule, rule);
        fill(row, {...rule, whole: rule.planned ?? rule.total});
        setBar(row.querySelector("svg.bar"), rule.done, rule.planned ?? rule.total, rule.running,
          rule.error);
      }
      rulesTable.hidden = rulesBody.rows.length === 0;
      document.getElementById("rules-empty").hidden = rulesBody.rows.length > 0;
      updatePager();
    }

    // The failed jobs at the top: the jobs whose latest attempt failed, as they change.
    const failedSection = document.getElementById("failed-jobs");
    const failedList = failedSection.querySelector("ul");
    function upsertFailed(job) {
      let item = failedList.querySelector('li[data-jobid="' + job.jobid + '"]');
      if (job.status !== "Error") {
        if (item) item.remove();
      } else {
        if (!item) {
          item = cloneTemplate("failed-job-template");
          item.dataset.jobid = job.jobid;
          item.querySelector("a").href = "/workflow/" + workflowId + "/job/" + job.jobid;
          failedList.appendChild(item);
        }
        fill(item, job);
        // The first log end the plugin sent (the failed_job macro twins it).
        const tail = (job.logs || []).map((log) => log.tail).find((text) => text) || "";
        const details = item.querySelector('[data-field="log_tail"]');
        details.querySelector("pre").textContent = tail;
        details.hidden = !tail;
      }
      failedSection.hidden = failedList.children.length === 0;
    }

    const eta = header.querySelector("[data-eta]");
    function updateWorkflow(wf) {
      if (wf.status === "Running") askEta(workflowId, (fresh) => showEta(eta, fresh));
      else showEta(eta, wf);
      fill(header, wf);
      header.querySelector('[data-field="progress"]').textContent = wf.jobs_done + " / " + wf.jobs_total;
      setBar(header.querySelector("svg.bar"), wf.jobs_done, wf.jobs_total, 0, wf.jobs_failed);
      document.title = wf.name + " · panoptes";
    }

    bindActions(header, () => workflowId,
      () => header.querySelector('[data-field="name"]').textContent);

    const feed = new PanoptesFeed({workflowId, since: startSeq});
    connectIndicator(feed);
    feed.on("workflow.*", (event) => {
      if (event.type === "workflow.deleted") {
        header.dataset.status = "deleted";
        const badge = header.querySelector("[data-status]");
        badge.textContent = "deleted";
        feed.stop();
        return;
      }
      if (event.type === "workflow.reset") {
        rules.clear();
        jobsBody.textContent = "";
        rulesBody.textContent = "";
        updatePager();
        timeline.reset();
        grid.reset();
      }
      updateWorkflow(event.workflow);
    });
    const views = window.PanoptesViews;
    const grid = views.datasetGrid(workflowId);
    const timeline = views.timeline(workflowId, {formatTime, formatDuration});
    const graph = views.ruleGraph(workflowId, ruleFilter || null, timeline.ready);
    if (ruleFilter && grid.focusRule) grid.focusRule(ruleFilter);
    feed.on("job.updated", (event) => {
      upsertJob(event.job);
      upsertFailed(event.job);
      grid.update(event.job);
      timeline.update(event.job);
      graph.job(event.job);
    });
    feed.on("rule.updated", (event) => {
      upsertRule(event.rule);
      graph.rule(event.rule);
      if (header.dataset.status === "Running") askEta(workflowId, (wf) => showEta(eta, wf));
    });
    fetch("/api/workflow/" + workflowId, {credentials: "same-origin"})
      .then((response) => (response.ok ? response.json() : null))
      .then((data) => { if (data) showEta(eta, data.workflow); });
    feed.start();
  }

  // ---- job page

  function jobPage() {
    const workflowId = Number(body.dataset.workflowId);
    const jobid = Number(body.dataset.jobid);
    const section = document.getElementById("job");

    function setList(name, values) {
      const list = document.querySelector('[data-list="' + name + '"]');
      list.textContent = "";
      for (const value of values.length ? values : [null]) {
        const li = document.createElement("li");
        if (value == null) {
          li.className = "muted";
          li.textContent = "none";
        } else {
          const code = document.createElement("code");
          code.textContent = value;
          li.appendChild(code);
        }
        list.appendChild(li);
      }
    }

    function setAttempts(attempts) {
      const tbody = document.querySelector("#attempts tbody");
      tbody.textContent = "";
      for (const a of attempts) {
        const tr = document.createElement("tr");
        const cells = [String(a.attempt), a.status, formatTime(a.started_at),
          formatTime(a.finished_at), a.error || ""];
        cells.forEach((text, i) => {
          const td = document.createElement("td");
          if (i === 1) {
            const badge = document.createElement("span");
            badge.className = "badge status-" + String(text).toLowerCase();
            badge.textContent = text;
            td.appendChild(badge);
          } else {
            td.textContent = text;
          }
          tr.appendChild(td);
        });
        tbody.appendChild(tr);
      }
    }

    // The ends of a failed job's log files (routes/html.py log_tail macro twins it).
    function setLogs(logs) {
      const box = document.querySelector("[data-logs]");
      box.textContent = "";
      for (const log of logs) {
        const item = cloneTemplate("log-tail-template");
        item.querySelector('[data-field="path"]').textContent = log.path;
        item.querySelector('[data-field="truncated"]').hidden = !log.truncated;
        const unread = item.querySelector('[data-field="read_error"]');
        unread.textContent = log.error ? "not read: " + log.error : "";
        unread.hidden = !log.error;
        const tail = item.querySelector('[data-field="tail"]');
        tail.textContent = log.tail || "";
        tail.hidden = !log.tail;
        box.appendChild(item);
      }
      document.getElementById("log-tails").hidden = !logs.length;
    }

    // What the job asked for beside what it used (routes/html.py resource_rows twins it).
    const USED = [["s", "wall time", "s"], ["cpu_time", "CPU time", "s"],
      ["mean_load", "mean CPU load", "%"], ["max_rss", "max RSS", "MB"],
      ["max_vms", "max VMS", "MB"], ["max_uss", "max USS", "MB"], ["max_pss", "max PSS", "MB"],
      ["io_in", "read", "MB"], ["io_out", "written", "MB"], ["repeats", "runs", ""]];

    function setResources(job) {
      const asked = job.threads != null ? [["threads", job.threads]] : [];
      asked.push(...Object.entries(job.resources || {}));
      const bench = job.benchmark || {};
      const used = USED.filter(([key]) => key in bench)
        .map(([key, label, unit]) => [label, (String(bench[key]) + " " + unit).trim()]);
      const tbody = document.querySelector("#resources tbody");
      tbody.textContent = "";
      for (let i = 0; i < Math.max(asked.length, used.length, 1); i++) {
        const tr = document.createElement("tr");
        const cells = [...(asked[i] || ["", ""]), ...(used[i] || ["", ""])];
        if (!asked.length && !used.length) cells.splice(0, 4, "none known");
        for (const text of cells) {
          const td = document.createElement("td");
          td.textContent = String(text);
          tr.appendChild(td);
        }
        if (cells.length === 1) { tr.firstChild.colSpan = 4; tr.firstChild.className = "muted"; }
        tbody.appendChild(tr);
      }
    }

    const feed = new PanoptesFeed({workflowId, since: startSeq});
    connectIndicator(feed);
    feed.on("job.updated", (event) => {
      const job = event.job;
      if (job.jobid !== jobid) return;
      setLogs(job.logs || []);
      setResources(job);
      fill(section, job);
      document.querySelector('[data-field="shell_command"]').textContent = job.shell_command || "–";
      setList("input", job.input);
      setList("output", job.output);
      setList("log", job.log);
      setAttempts(job.attempts || []);
    });
    feed.start();
  }

  refreshTimes(document);
  refreshDurations(document);
  setInterval(() => refreshDurations(document), 1000);
  setInterval(() => refreshTimes(document), 10000);
  if (page === "dashboard") dashboard();
  else if (page === "workflow") workflowPage();
  else if (page === "job") jobPage();
})();
