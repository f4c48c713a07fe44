/*
 * timeline.js: every attempt of every job of a run on a clock-time axis, a band per rule,
 * drawn on a canvas so that 10,000 jobs stay fast. Loaded once from
 * GET /api/workflow/<id>/timeline, then kept from the feed's job.updated.
 * Zoom with the buttons, Ctrl+wheel or a double click; drag to pan; a bar opens its job.
 */
(function () {
  "use strict";

  // The order of shapes.TIMELINE_STATUSES, which the endpoint's status indexes count in.
  const COLOURS = {Done: "--done", Running: "--running", Error: "--error", Waiting: "--waiting"};
  const STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
    43200, 86400].map((s) => s * 1000);
  const AXIS = 24;   // px above the bands, for the clock times
  const GAP = 6;     // px between two rules' bands
  const MIN_TICK_PX = 90;

  function timeline(workflowId, helpers) {
    const box = document.getElementById("timeline");
    const canvas = box.querySelector("canvas");
    const summary = document.getElementById("timeline-summary");
    const tip = box.querySelector(".timeline-tip");
    const context = canvas.getContext("2d");
    let rules = [];                 // rule names, in pipeline order
    const jobs = new Map();         // jobid -> {jobid, rule, wildcards, spans: [{attempt, status, start, end}]}
    let loaded = false;
    const early = [];               // jobs the feed sent before the timeline came
    let bands = [];                 // per rule: {rule, top, lanes: [[span...]...]} (layout())
    let laidOut = false;
    let view = null;                // {from, to} in epoch ms while zoomed; null: the whole run
    let frame = 0;

    // ---- the data

    function put(job) {
      const spans = [];
      for (const a of job.attempts || []) {
        if (!a.started_at) continue;
        spans.push({attempt: a.attempt || job.attempt, status: a.status,
          start: Date.parse(a.started_at), end: a.finished_at ? Date.parse(a.finished_at) : null});
      }
      const rule = job.rule || "";
      if (!rules.includes(rule)) rules.push(rule);
      const wildcards = typeof job.wildcards === "string" ? job.wildcards
        : Object.entries(job.wildcards || {}).map(([k, v]) => k + "=" + v).join(",");
      jobs.set(job.jobid, {jobid: job.jobid, rule, wildcards, spans});
    }

    function load(data) {
      rules = data.rules.slice();
      const origin = data.origin ? Date.parse(data.origin) : 0;
      const byJob = new Map();
      for (const [jobid, rule, attempt, status, start, end, wildcards] of data.bars) {
        let job = byJob.get(jobid);
        if (!job) {
          job = {jobid, rule: data.rules[rule], wildcards: data.wildcards[wildcards], spans: []};
          byJob.set(jobid, job);
        }
        job.spans.push({attempt, status: data.statuses[status], start: origin + start,
          end: end == null ? null : origin + end});
      }
      for (const [jobid, job] of byJob) if (!jobs.has(jobid)) jobs.set(jobid, job);
      loaded = true;
      early.splice(0).forEach(put);
      changed();
    }

    // Attempts packed into lanes per rule: an attempt takes the first lane free at its start.
    function layout() {
      const now = Date.now();
      const byRule = new Map(rules.map((rule) => [rule, []]));
      for (const job of jobs.values()) {
        for (const span of job.spans) byRule.get(job.rule).push({job, ...span});
      }
      bands = [];
      for (const [rule, spans] of byRule) {
        if (!spans.length) continue;
        spans.sort((a, b) => a.start - b.start || a.job.jobid - b.job.jobid);
        const lanes = [];
        const ends = [];
        for (const span of spans) {
          const end = span.end == null ? now : span.end;
          let lane = ends.findIndex((e) => e <= span.start);
          if (lane < 0) { lane = lanes.length; lanes.push([]); ends.push(0); }
          lanes[lane].push(span);
          ends[lane] = Math.max(end, span.start + 1);
        }
        bands.push({rule, lanes});
      }
      laidOut = true;
    }

    function extent() {
      let from = Infinity;
      let to = -Infinity;
      let running = false;
      for (const job of jobs.values()) {
        for (const span of job.spans) {
          from = Math.min(from, span.start);
          if (span.end == null) running = true;
          to = Math.max(to, span.end == null ? Date.now() : span.end);
        }
      }
      return {from, to: Math.max(to, from + 1000), running};
    }

    // ---- drawing

    function changed() {
      laidOut = false;
      redraw();
    }

    function redraw() {
      if (!frame) frame = requestAnimationFrame(draw);
    }

    // The axis's formatters, one per kind of tick (toLocaleString would make one per call).
    const clocks = new Map();

    function clock(ms, step, withDate) {
      const kind = (step < 1000 ? "ms" : step < 60000 ? "s" : "m") + (withDate ? "d" : "");
      let format = clocks.get(kind);
      if (!format) {
        const options = {hour: "2-digit", minute: "2-digit"};
        if (step < 60000) options.second = "2-digit";
        if (step < 1000) options.fractionalSecondDigits = 1;
        if (withDate) { options.month = "short"; options.day = "numeric"; }
        format = new Intl.DateTimeFormat(undefined, options);
        clocks.set(kind, format);
      }
      return format.format(new Date(ms));
    }

    function geometry() {
      const width = Math.max(box.clientWidth - 2, 200);
      const labelWidth = Math.min(180, Math.max(80, width * 0.16));
      const lanes = bands.reduce((n, band) => n + band.lanes.length, 0);
      const lane = Math.max(3, Math.min(14, Math.floor(520 / Math.max(lanes, 1))));
      let top = AXIS;
      for (const band of bands) {
        band.top = top;
        top += band.lanes.length * lane + GAP;
      }
      return {width, labelWidth, lane, height: top};
    }

    function draw() {
      frame = 0;
      if (!loaded) return;
      if (!laidOut) layout();
      const whole = extent();
      const count = Array.from(jobs.values()).reduce((n, job) => n + job.spans.length, 0);
      box.dataset.bars = String(count);
      box.dataset.rules = String(bands.length);
      box.hidden = false;
      if (!count) {
        summary.textContent = "No job has started yet.";
        box.classList.add("empty-timeline");
        return;
      }
      box.classList.remove("empty-timeline");
      const span = view || whole;
      const g = geometry();
      const ratio = window.devicePixelRatio || 1;
      canvas.style.width = g.width + "px";
      canvas.style.height = g.height + "px";
      canvas.width = Math.round(g.width * ratio);
      canvas.height = Math.round(g.height * ratio);
      context.setTransform(ratio, 0, 0, ratio, 0, 0);
      context.clearRect(0, 0, g.width, g.height);
      const plot = g.width - g.labelWidth - 8;
      const x = (ms) => g.labelWidth + ((ms - span.from) / (span.to - span.from)) * plot;
      g.x = x;
      g.span = span;
      // The theme's colours, read once a draw (each read of the computed style costs).
      const style = getComputedStyle(document.documentElement);
      const paint = (name) => style.getPropertyValue(name).trim() || "#888";
      const muted = paint("--muted");
      const line = paint("--line");
      drawAxis(g, span, plot, muted, line);
      const fill = {};
      for (const [status, name] of Object.entries(COLOURS)) fill[status] = paint(name);
      const now = Date.now();
      context.font = "12px system-ui, sans-serif";
      context.textBaseline = "middle";
      // Bars gathered by colour and each colour filled as one path: a canvas draws 10,000
      // rectangles of one path far faster than 10,000 fills with the style switched between.
      const paths = new Map();
      const pathOf = (colourOf) => {
        let path = paths.get(colourOf);
        if (!path) { path = new Path2D(); paths.set(colourOf, path); }
        return path;
      };
      const retried = new Path2D();  // filled last, over the bars it marks
      const height = Math.max(g.lane - 2, 1);
      for (const band of bands) {
        context.fillStyle = muted;
        const label = band.rule || "(unnamed)";
        context.fillText(fit(label, g.labelWidth - 10), 4, band.top + (band.lanes.length * g.lane) / 2);
        context.fillStyle = line;
        context.fillRect(0, band.top + band.lanes.length * g.lane + GAP / 2, g.width, 1);
        band.lanes.forEach((lane, i) => {
          const y = band.top + i * g.lane;
          for (const s of lane) {
            const end = s.end == null ? now : s.end;
            if (end < span.from || s.start > span.to) continue;
            const left = Math.max(x(s.start), g.labelWidth);
            const right = Math.min(x(end), g.width);
            const width = Math.max(right - left, 1.5);
            pathOf(fill[s.status] || fill.Running).rect(left, y + 1, width, height);
            if (s.attempt > 1 && g.lane >= 5) retried.rect(left, y + 1, width, 2);
          }
        });
      }
      for (const [colourOf, path] of paths) {
        context.fillStyle = colourOf;
        context.fill(path);
      }
      context.fillStyle = paint("--retried");
      context.fill(retried);
      if (whole.running && now >= span.from && now <= span.to) {
        context.fillStyle = paint("--fg");
        context.fillRect(x(now), AXIS - 4, 1, g.height - AXIS + 4);
      }
      box.geometry = g;
      const first = new Date(whole.from);
      summary.textContent = count + " attempt" + (count === 1 ? "" : "s") + " of " + jobs.size +
        " job" + (jobs.size === 1 ? "" : "s") + " in " + bands.length + " rule" +
        (bands.length === 1 ? "" : "s") + ", from " + helpers.formatTime(first.toISOString()) +
        (whole.running ? ", still running" : ", over " + helpers.formatDuration(whole.to - whole.from)) +
        (view ? " (zoomed in: " + helpers.formatDuration(view.to - view.from) + " shown)" : "");
      if (whole.running) setTimeout(redraw, 1000);
    }

    function fit(text, width) {
      if (context.measureText(text).width <= width) return text;
      let cut = text;
      while (cut.length > 1 && context.measureText(cut + "…").width > width) cut = cut.slice(0, -1);
      return cut + "…";
    }

    function drawAxis(g, span, plot, muted, line) {
      const duration = span.to - span.from;
      const step = STEPS.find((s) => (s / duration) * plot >= MIN_TICK_PX) || STEPS[STEPS.length - 1];
      const withDate = duration > 86400000 || new Date(span.from).toDateString() !== new Date(span.to).toDateString();
      context.font = "11px system-ui, sans-serif";
      context.textBaseline = "top";
      const offset = new Date(span.from).getTimezoneOffset() * 60000;
      let tick = Math.ceil((span.from - offset) / step) * step + offset;
      for (; tick <= span.to; tick += step) {
        const at = g.x(tick);
        context.fillStyle = line;
        context.fillRect(at, AXIS - 6, 1, g.height - AXIS + 6);
        context.fillStyle = muted;
        context.fillText(clock(tick, step, withDate), at + 3, 4);
      }
    }

    // ---- pointing

    function spanAt(event) {
      const g = box.geometry;
      if (!g) return null;
      const rect = canvas.getBoundingClientRect();
      const px = event.clientX - rect.left;
      const py = event.clientY - rect.top;
      if (px < g.labelWidth) return null;
      const band = bands.find((b) => py >= b.top && py < b.top + b.lanes.length * g.lane);
      if (!band) return null;
      const lane = band.lanes[Math.floor((py - band.top) / g.lane)] || [];
      const now = Date.now();
      const slack = 3 * (g.span.to - g.span.from) / (g.width - g.labelWidth);  // 3 px
      const ms = g.span.from + ((px - g.labelWidth) / (g.width - g.labelWidth - 8)) * (g.span.to - g.span.from);
      return lane.find((s) => s.start - slack <= ms && (s.end == null ? now : s.end) + slack >= ms) || null;
    }

    function showTip(event, s) {
      if (!s) { tip.hidden = true; canvas.style.cursor = ""; return; }
      const end = s.end == null ? Date.now() : s.end;
      tip.textContent = (s.job.rule || "job") + " " + s.job.jobid +
        (s.job.wildcards ? " (" + s.job.wildcards + ")" : "") + " · attempt " + s.attempt +
        " · " + s.status + " · " + helpers.formatDuration(end - s.start) + " from " +
        helpers.formatTime(new Date(s.start).toISOString());
      const rect = box.getBoundingClientRect();
      tip.style.left = Math.min(event.clientX - rect.left + 12, rect.width - 260) + "px";
      tip.style.top = (event.clientY - rect.top + 14) + "px";
      tip.hidden = false;
      canvas.style.cursor = "pointer";
    }

    function zoom(factor, centre) {
      const whole = extent();
      const span = view || whole;
      const at = centre == null ? (span.from + span.to) / 2 : centre;
      let width = (span.to - span.from) * factor;
      if (width >= whole.to - whole.from) { view = null; redraw(); return; }
      width = Math.max(width, 200);
      const from = Math.max(whole.from, Math.min(at - (at - span.from) * factor, whole.to - width));
      view = {from, to: from + width};
      redraw();
    }

    let drag = null;
    canvas.addEventListener("mousedown", (event) => {
      drag = {x: event.clientX, view: view, moved: false};
    });
    window.addEventListener("mouseup", () => { setTimeout(() => { drag = null; }, 0); });
    canvas.addEventListener("mousemove", (event) => {
      if (drag && drag.view && Math.abs(event.clientX - drag.x) > 3) {
        const g = box.geometry;
        const whole = extent();
        const width = drag.view.to - drag.view.from;
        const shift = ((drag.x - event.clientX) / (g.width - g.labelWidth - 8)) * width;
        const from = Math.max(whole.from, Math.min(drag.view.from + shift, whole.to - width));
        view = {from, to: from + width};
        drag.moved = true;
        redraw();
        return;
      }
      showTip(event, spanAt(event));
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    canvas.addEventListener("click", (event) => {
      if (drag && drag.moved) return;
      const s = spanAt(event);
      if (s) window.location.assign("/workflow/" + workflowId + "/job/" + s.job.jobid);
    });
    canvas.addEventListener("dblclick", (event) => {
      const g = box.geometry;
      const rect = canvas.getBoundingClientRect();
      zoom(0.5, g.span.from + ((event.clientX - rect.left - g.labelWidth) / (g.width - g.labelWidth - 8)) * (g.span.to - g.span.from));
    });
    canvas.addEventListener("wheel", (event) => {
      if (!event.ctrlKey && !event.metaKey) return;  // plain scrolling scrolls the page
      event.preventDefault();
      const g = box.geometry;
      const rect = canvas.getBoundingClientRect();
      const at = g.span.from + ((event.clientX - rect.left - g.labelWidth) / (g.width - g.labelWidth - 8)) * (g.span.to - g.span.from);
      zoom(event.deltaY < 0 ? 0.8 : 1.25, at);
    }, {passive: false});
    for (const button of document.querySelectorAll("[data-zoom]")) {
      button.addEventListener("click", () => {
        const how = button.dataset.zoom;
        if (how === "in") zoom(0.5);
        else if (how === "out") zoom(2);
        else { view = null; redraw(); }
      });
    }
    window.addEventListener("resize", redraw);

    const ready = fetch("/api/workflow/" + workflowId + "/timeline", {credentials: "same-origin"})
      .then((response) => response.json())
      .then(load)
      .catch(() => { summary.textContent = "The timeline could not be loaded."; });

    return {
      ready,  // settles once the timeline is drawn (or could not be loaded)
      update(job) {
        if (!loaded) { early.push(job); return; }
        put(job);
        changed();
      },
      reset() {
        jobs.clear();
        changed();
      },
    };
  }

  window.PanoptesViews = Object.assign(window.PanoptesViews || {}, {timeline});
})();
