/*
 * panoptes-feed.js: a small client for the panoptes websocket feed. No build step, no
 * dependencies. It connects, reconnects with backoff, and resumes from the last sequence
 * number it saw, so a dropped connection loses no event and repeats none.
 *
 *   const feed = new PanoptesFeed({server: "http://127.0.0.1:5000", workflowId: 3});
 *   feed.on("job.updated", (event) => console.log(event.job.jobid, event.job.status));
 *   feed.on("workflow.*", (event) => console.log(event.type, event.workflow));
 *   feed.start();
 *
 * Options: server (default: this page's origin), workflowId (omit for every workflow),
 * since (resume after this seq), minDelay/maxDelay (reconnect backoff, ms),
 * silenceTimeout (ms without any message before the socket is presumed dead).
 * Event names: every message "type" (workflow.created, workflow.updated, workflow.reset,
 * workflow.renamed, workflow.cancelled, workflow.deleted, job.updated, rule.updated),
 * a prefix with ".*", "*" for all of them, and the connection events "open", "close",
 * "hello", "resync" and "reset" (the server's database was replaced since the last
 * connection: what the page shows is from the old one; start over).
 */
(function (root) {
  "use strict";

  function feedUrl(server, workflowId, since) {
    const base = new URL(server || root.location.origin);
    base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    const path = workflowId == null ? "/ws" : "/ws/workflow/" + encodeURIComponent(workflowId);
    const url = new URL(base.pathname.replace(/\/$/, "") + path, base);
    if (since != null) url.searchParams.set("since", String(since));
    return url.toString();
  }

  class PanoptesFeed {
    constructor(options) {
      const o = options || {};
      this.server = o.server;
      this.workflowId = o.workflowId == null ? null : o.workflowId;
      this.seq = o.since == null ? null : Number(o.since);
      this.minDelay = o.minDelay || 500;
      this.maxDelay = o.maxDelay || 30000;
      this.silenceTimeout = o.silenceTimeout || 75000;
      this.handlers = new Map();
      this.socket = null;
      this.attempts = 0;
      this.stopped = true;
      this.timer = null;
      this.watchdog = null;
    }

    on(type, handler) {
      if (!this.handlers.has(type)) this.handlers.set(type, []);
      this.handlers.get(type).push(handler);
      return this;
    }

    start() {
      this.stopped = false;
      this.connect();
      return this;
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      clearTimeout(this.watchdog);
      if (this.socket) this.socket.close(1000, "stopped");
      this.socket = null;
    }

    emit(type, event) {
      const names = [type, "*"];
      const dot = type.indexOf(".");
      if (dot > 0) names.push(type.slice(0, dot) + ".*");
      for (const name of names) {
        for (const handler of this.handlers.get(name) || []) {
          try {
            handler(event, this);
          } catch (err) {
            console.error("panoptes feed handler for", type, "failed:", err);
          }
        }
      }
    }

    connect() {
      const socket = new WebSocket(feedUrl(this.server, this.workflowId, this.seq));
      this.socket = socket;
      socket.onopen = () => {
        this.attempts = 0;
        this.emit("open", {type: "open"});
        this.resetWatchdog();
      };
      socket.onmessage = (message) => {
        this.resetWatchdog();
        let event;
        try {
          event = JSON.parse(message.data);
        } catch (err) {
          return;
        }
        if (event.type === "hello") {
          if (this.seq != null && event.head < this.seq) {
            // The server's log is behind what we saw: its database was replaced. It goes
            // on from its newest seq; what we hold came from the old database.
            this.seq = event.head;
            this.emit("hello", event);
            this.emit("reset", event);
            return;
          }
          if (this.seq == null) this.seq = event.head;
          this.emit("hello", event);
          return;
        }
        if (event.type === "ping") return;
        if (event.type === "resync") {
          this.emit("resync", event);
          return;
        }
        if (typeof event.seq === "number") {
          if (this.seq != null && event.seq <= this.seq) return; // already seen
          this.seq = event.seq;
        }
        this.emit(event.type, event);
      };
      socket.onclose = (close) => {
        clearTimeout(this.watchdog);
        if (this.socket !== socket) return;
        this.socket = null;
        this.emit("close", {type: "close", code: close.code, reason: close.reason});
        if (!this.stopped) this.scheduleReconnect();
      };
      socket.onerror = () => socket.close();
    }

    scheduleReconnect() {
      const ceiling = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempts);
      const delay = ceiling / 2 + Math.random() * (ceiling / 2);
      this.attempts += 1;
      this.timer = setTimeout(() => this.connect(), delay);
    }

    resetWatchdog() {
      clearTimeout(this.watchdog);
      this.watchdog = setTimeout(() => {
        if (this.socket) this.socket.close(4000, "silent too long");
      }, this.silenceTimeout);
    }
  }

  root.PanoptesFeed = PanoptesFeed;
})(typeof window !== "undefined" ? window : globalThis);
