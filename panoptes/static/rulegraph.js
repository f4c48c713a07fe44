/*
 * rulegraph.js: the run's rule graph on the workflow page, laid out by dagre (vendored in
 * static/vendor), each rule a box coloured by its progress. GET /api/workflow/<id>/dag gives
 * the graph (the client's, or one made of the jobs' files); the feed's rule.updated keeps
 * the counts. A rule links to the page filtered to it (its jobs, its column of the grid).
 * Rule names are the user's: set as text, compared as strings, never made into selectors.
 */
(function () {
  "use strict";

  const NS = "http://www.w3.org/2000/svg";
  const BOX_HEIGHT = 44;
  const BAR_HEIGHT = 6;

  // `after`: a promise to wait for before the first fetch (the page's grid and timeline go
  // first: the graph's edges cost the server most, and the page is usable without it).
  function ruleGraph(workflowId, focused, after) {
    const section = document.getElementById("rulegraph-section");
    const holder = document.getElementById("rulegraph");
    const source = document.getElementById("rulegraph-source");
    const nodes = new Map();  // rule -> {counts, box: {g, text, bar...}}
    let edgesFrom = null;
    let loading = null;
    let again = false;

    function svg(name, attributes, parent) {
      const el = document.createElementNS(NS, name);
      for (const [key, value] of Object.entries(attributes || {})) el.setAttribute(key, String(value));
      if (parent) parent.appendChild(el);
      return el;
    }

    function textWidth(text, px, weight) {
      const canvas = textWidth.canvas || (textWidth.canvas = document.createElement("canvas"));
      const context = canvas.getContext("2d");
      context.font = weight + " " + px + "px system-ui, sans-serif";
      return context.measureText(text).width;
    }

    function whole(counts) {
      return counts.planned != null ? counts.planned : counts.total;
    }

    // A rule's state, for its colour: failed > running > done (all of it) > waiting.
    function state(counts) {
      if (counts.failed) return "error";
      if (counts.running) return "running";
      const all = whole(counts);
      if (all && counts.done >= all) return "done";
      if (counts.done) return "partial";
      return "waiting";
    }

    function paint(rule) {
      const node = nodes.get(rule);
      if (!node || !node.box) return;
      const c = node.counts;
      const all = whole(c) || 0;
      node.box.g.setAttribute("class", "rule-node rule-" + state(c) + (rule === focused ? " focused" : ""));
      node.box.count.textContent = c.done + " / " + all + " done" +
        (c.running ? " · " + c.running + " running" : "") + (c.failed ? " · " + c.failed + " failed" : "");
      const width = node.box.width - 16;
      const share = (n) => (all > 0 ? (width * Math.min(n, all)) / all : 0);
      const right = node.box.left + node.box.width - 8;
      let x = node.box.left + 8;
      for (const [name, n] of [["done", c.done], ["running", c.running], ["error", c.failed]]) {
        const w = Math.max(0, Math.min(share(n), right - x));
        node.box.bars[name].setAttribute("x", x.toFixed(1));
        node.box.bars[name].setAttribute("width", w.toFixed(1));
        x += w;
      }
      node.box.title.textContent = rule + ": " + c.done + " of " + all + " done, " + c.running +
        " running, " + c.failed + " failed, " + (c.waiting || 0) + " waiting";
    }

    function draw(graph) {
      if (!graph.nodes.length) {  // no rule known yet: nothing to lay out
        nodes.clear();
        holder.textContent = "";
        section.hidden = true;
        return;
      }
      const g = new window.dagre.graphlib.Graph();
      g.setGraph({rankdir: "LR", nodesep: 18, ranksep: 40, marginx: 8, marginy: 8});
      g.setDefaultEdgeLabel(() => ({}));
      for (const node of graph.nodes) {
        // Room for the name and for the longest count line ("99 / 99 done · 9 running · 9 failed").
        const all = String(whole(node) || 0);
        const counts = all + " / " + all + " done · " + all + " running · " + all + " failed";
        const width = Math.max(textWidth(node.rule || "(unnamed)", 13, 600), textWidth(counts, 11, 400));
        g.setNode(node.rule, {width: Math.max(110, width + 24), height: BOX_HEIGHT});
      }
      for (const [from, to] of graph.edges) {
        if (g.hasNode(from) && g.hasNode(to) && from !== to) g.setEdge(from, to);
      }
      window.dagre.layout(g);
      const size = g.graph();
      holder.textContent = "";
      const root = svg("svg", {
        viewBox: "0 0 " + Math.ceil(size.width) + " " + Math.ceil(size.height),
        width: Math.ceil(size.width), role: "group", "aria-label": "rule graph",
      }, holder);
      const defs = svg("defs", {}, root);
      const marker = svg("marker", {id: "rulegraph-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
        markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse"}, defs);
      svg("path", {d: "M 0 0 L 10 5 L 0 10 z", class: "rule-arrow"}, marker);
      for (const edge of g.edges()) {
        const points = g.edge(edge).points;
        const d = points.map((p, i) => (i ? "L" : "M") + p.x.toFixed(1) + " " + p.y.toFixed(1)).join(" ");
        svg("path", {d, class: "rule-edge", "marker-end": "url(#rulegraph-arrow)"}, root);
      }
      nodes.clear();
      for (const node of graph.nodes) {
        const place = g.node(node.rule);
        const left = place.x - place.width / 2;
        const top = place.y - place.height / 2;
        const link = svg("a", {href: "?rule=" + encodeURIComponent(node.rule) + "#rulegraph-section"}, root);
        link.setAttribute("aria-label", "show the jobs of rule " + node.rule);
        const group = svg("g", {}, link);
        const title = svg("title", {}, group);
        svg("rect", {x: left, y: top, width: place.width, height: place.height, rx: 6, class: "rule-box"}, group);
        const name = svg("text", {x: place.x, y: top + 17, "text-anchor": "middle", class: "rule-name"}, group);
        name.textContent = node.rule || "(unnamed)";
        const count = svg("text", {x: place.x, y: top + 31, "text-anchor": "middle", class: "rule-count"}, group);
        const bars = {};
        const barTop = top + place.height - BAR_HEIGHT - 4;
        svg("rect", {x: left + 8, y: barTop, width: place.width - 16, height: BAR_HEIGHT, class: "bar-bg"}, group);
        for (const part of ["done", "running", "error"]) {
          bars[part] = svg("rect", {x: left + 8, y: barTop, width: 0, height: BAR_HEIGHT, class: "bar-" + part}, group);
        }
        nodes.set(node.rule, {counts: node, box: {g: group, count, bars, title, left, width: place.width}});
        paint(node.rule);
      }
      section.hidden = graph.nodes.length === 0;
      section.dataset.rules = String(graph.nodes.length);
      section.dataset.edges = String(g.edges().length);
      source.textContent = graph.edges_from === "client"
        ? "as Snakemake planned it" : "as far as the jobs so far tell (their input and output files)";
    }

    function load() {
      if (loading) { again = true; return; }
      loading = fetch("/api/workflow/" + workflowId + "/dag", {credentials: "same-origin"})
        .then((response) => response.json())
        .then((graph) => { edgesFrom = graph.edges_from; draw(graph); })
        .catch(() => { section.hidden = true; })
        .finally(() => {
          loading = null;
          if (again) { again = false; setTimeout(load, 500); }
        });
    }

    let reloadTimer = null;
    function reloadSoon() {
      clearTimeout(reloadTimer);
      reloadTimer = setTimeout(load, 1000);
    }

    Promise.resolve(after).finally(load);
    return {
      // rule.updated: the rule's counts (an unknown rule means the graph has grown).
      rule(counts) {
        const node = nodes.get(counts.rule);
        if (!node) {
          if (counts.rule && !loading) reloadSoon();
          return;
        }
        node.counts = {...node.counts, ...counts, failed: counts.error};
        paint(counts.rule);
      },
      // job.updated: a newly described job may add an edge to a graph made of the jobs.
      job(job) {
        if (edgesFrom === "jobs" && job.rule && (job.input || []).length) reloadSoon();
      },
    };
  }

  window.PanoptesViews = Object.assign(window.PanoptesViews || {}, {ruleGraph});
})();
