/* Live task pages over WebSockets (apps/tasks/consumers.py describes the protocol).

   - A task timeline: <section data-task-timeline data-ws-path="/ws/tasks/<id>/">. The socket sends every event
     after ?after=<seq>; we remember the last seq we rendered, so a reconnect asks for exactly what is missing
     (no gap) and an event that arrives twice is ignored (no duplicate). Rows are cloned from the
     <template data-event-template> the page renders (one copy of the markup, in the Django template).
   - A task list: <div data-task-list data-ws-path="/ws/org/" data-list-url="/tasks/" data-filters="#form">. Status
     changes update the row's badge in place; an unknown task (or a reconnect, which may have missed changes)
     re-fetches the list fragment through htmx, with the filters as the form shows them now.
   No build step; plain ES5-compatible code. */
(function () {
  "use strict";

  var TERMINAL = { completed: true, failed: true, canceled: true, rejected: true };
  var PERMANENT_CLOSE = { 4401: "Your session ended: sign in again for live updates.",
                          4403: "You may not read tasks in this organization.",
                          4404: "This task does not exist in your organization.",
                          // The server says which org the session is in now (a "refused" message before the close).
                          4409: "You switched organization in another tab: reload the page to follow this task." };

  // Why a socket was closed for good, when the close reason says more than its code.
  var CLOSE_REASONS = { membership_ended: "You are no longer a member of this organization.",
                        no_organization: "You are in no organization yet: create one or accept an invitation." };
  // Every socket of the page, with the element it serves: htmx's Back/Forward puts a saved copy of the page in
  // place and runs this script on it again, so the sockets of the replaced elements must end (they piled up,
  // one more /ws/org/ per Back).
  // (Kept on window: the script's second run must see the first run's sockets, and listen once.)
  var SOCKETS = window.hermesLiveSockets = window.hermesLiveSockets || [];
  if (!window.hermesLiveSocketsWatched) {
    window.hermesLiveSocketsWatched = true;
    document.addEventListener("htmx:historyRestore", function () {
      SOCKETS.slice().forEach(function (live) {
        if (!document.contains(live.root)) { live.close(); SOCKETS.splice(SOCKETS.indexOf(live), 1); }
      });
    });
  }

  function wsURL(path) {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    return scheme + window.location.host + path;
  }

  // A socket that reconnects with capped exponential backoff and reports its state to `onState`.
  function LiveSocket(root, pathFn, handlers) {
    this.root = root;
    this.pathFn = pathFn;
    this.handlers = handlers;
    this.attempt = 0;
    this.closedForGood = false;
    SOCKETS.push(this);
    this.connect();
  }
  LiveSocket.prototype.connect = function () {
    var self = this;
    if (!document.contains(self.root)) { self.closedForGood = true; return; }  // its element left the page
    var socket = new WebSocket(wsURL(self.pathFn()));
    self.socket = socket;
    self.handlers.onState(self.attempt === 0 ? "connecting" : "reconnecting");
    socket.onopen = function () {
      self.wasOpen = true;
      self.handlers.onState("open");
    };
    socket.onmessage = function (msg) {
      var data;
      try { data = JSON.parse(msg.data); } catch (e) { return; }
      if (data.type === "synced" || data.type === "event") { self.attempt = 0; }
      // Why the close that follows is coming, said for a person: it names what a close reason cannot (the org the
      // session was switched to in another tab, 4409 org_switched).
      if (data.type === "refused") { self.refusal = data; return; }
      self.handlers.onMessage(data);
    };
    socket.onclose = function (event) {
      if (self.closedForGood) { return; }
      var refusal = self.refusal && self.refusal.code === event.code ? self.refusal.message : "";
      self.refusal = null;
      if (PERMANENT_CLOSE[event.code]) {
        self.closedForGood = true;
        self.handlers.onState("closed", refusal || CLOSE_REASONS[event.reason] || PERMANENT_CLOSE[event.code]);
        return;
      }
      if (self.handlers.shouldStop && self.handlers.shouldStop()) {
        self.handlers.onState("done");
        return;
      }
      // 1012 `reconnect`: the server asks for it (Redis is back, and the org socket may have missed changes, which
      // the list's re-fetch on reopening puts right): at once, not after the backoff earlier failures built up.
      if (event.code === 1012) { self.attempt = 0; }
      self.attempt += 1;
      var delay = Math.min(15000, 500 * Math.pow(2, Math.min(self.attempt, 5))) * (0.5 + Math.random() / 2);
      self.handlers.onState("reconnecting");
      window.setTimeout(function () { self.connect(); }, delay);
    };
  };
  LiveSocket.prototype.close = function () {
    this.closedForGood = true;
    if (this.socket) { this.socket.close(); }
  };

  function setLiveStatus(root, state, detail) {
    var dot = root.querySelector("[data-live-dot]");
    var label = root.querySelector("[data-live-label]");
    var text = { connecting: "Connecting…", open: "Live", reconnecting: "Reconnecting…", done: "Finished",
                 closed: detail || "Disconnected" }[state] || state;
    if (dot) { dot.setAttribute("data-state", state); }
    if (label) { label.textContent = text; }
    root.setAttribute("data-live-state", state);
    if (state === "closed" && detail && window.hermesShowError) { window.hermesShowError(detail); }
  }

  function setBadge(badge, state) {
    if (!badge) { return; }
    badge.textContent = state;
    badge.className = "badge badge-" + state;
    badge.setAttribute("data-state", state);
  }

  function partsText(parts) {
    if (!parts || !parts.length) { return ""; }
    return parts.map(function (part) {
      if (part.kind === "text" || part.text !== undefined) { return part.text; }
      if (part.kind === "data" || part.data !== undefined) { return JSON.stringify(part.data); }
      // Files: a link the agent gave (with its name when it said one), or bytes it sent (kept base64 in the JSON).
      if (part.kind === "url") { return part.filename ? part.filename + " <" + part.url + ">" : part.url; }
      if (part.kind === "raw") { return "[file " + (part.filename || "") + "]"; }
      return "";
    }).filter(Boolean).join("\n");
  }

  // One line a person can read; the full JSON stays one click away in <details>.
  function summarize(event) {
    var d = event.data || {};
    switch (event.kind) {
      case "state":
        // An agent that asks for input (or explains a failure) says so in the state's message: show it.
        var said = d.message ? partsText(d.message.parts) : "";
        return (d.from ? d.from + " → " : "") + d.to + (d.reason ? " (" + d.reason + ")" : "") +
          (d.error ? ": " + d.error : "") + (said ? " — " + said : "");
      case "message":
      case "progress":
        return (d.role ? d.role + ": " : "") + (partsText(d.parts) || "(no text)");
      case "artifact":
        return (d.name ? d.name + ": " : "") + (partsText(d.parts) || "(artifact)");
      case "retry":
        return "attempt " + (d.attempt || "?") + " failed" + (d.error ? " — " + d.error : "") +
          (d.delay !== undefined ? "; retrying in " + Number(d.delay).toFixed(1) + " s" : "");
      case "error":
        return d.error || d.message || "error";
      default:
        return "";
    }
  }

  function initTimeline(root) {
    var list = root.querySelector("[data-events]");
    var template = root.querySelector("template[data-event-template]");
    var stateBadge = document.querySelector("[data-task-state]");
    var empty = root.querySelector("[data-events-empty]");
    var lastSeq = 0;
    var lastAgentText = "";  // what the agent said last: the question the reply box answers
    var state = root.getAttribute("data-state") || "";
    var basePath = root.getAttribute("data-ws-path");
    var socketState = "connecting";

    // The indicator says "Live" while the socket is open and the task can still change; once the task has
    // finished it says so ("Live" on a canceled task read as if more were coming).
    function showSocketState(s, detail) {
      socketState = s;
      setLiveStatus(root, s === "open" && TERMINAL[state] ? "done" : s, detail);
    }

    function render(event) {
      var seq = Number(event.seq);
      if (seq <= lastSeq) { return; } // a duplicate (the backfill raced a live message): already shown
      lastSeq = seq;
      root.setAttribute("data-last-seq", String(seq));
      var row = template.content.firstElementChild.cloneNode(true);
      row.setAttribute("data-seq", String(seq));
      row.setAttribute("data-kind", event.kind);
      row.querySelector("[data-field=seq]").textContent = "#" + seq;
      row.querySelector("[data-field=kind]").textContent = event.kind;
      // Local time in the console's one format (static/js/hermes.js), like every other time on the page.
      window.hermesTime.show(row.querySelector("[data-field=time]"), event.created_at, "time");
      row.querySelector("[data-field=summary]").textContent = summarize(event);
      row.querySelector("[data-field=data]").textContent = JSON.stringify(event.data, null, 2);
      list.appendChild(row);
      if (empty) { empty.hidden = true; }
      var d = event.data || {};
      var said = event.kind === "state" ? (d.message ? partsText(d.message.parts) : "")
        : (event.kind === "message" || event.kind === "progress") && d.role === "agent" ? partsText(d.parts) : "";
      if (said) { lastAgentText = said; }
      if (event.kind === "state" && d.to) { applyState(d.to); }
    }

    function applyState(next) {
      state = next;
      root.setAttribute("data-state", next);
      setBadge(stateBadge, next);
      var cancel = document.querySelector("[data-cancel-task]");
      if (cancel && TERMINAL[next]) { cancel.hidden = true; }
      if (TERMINAL[next]) {
        showSocketState(socketState);
        // The About card was rendered before the end (no "Finished" time yet): fetch it again, once.
        var about = document.querySelector("[data-task-about]");
        if (about && about.getAttribute("data-state") !== next && window.htmx) {
          about.setAttribute("data-state", next);
          window.htmx.trigger(about, "hermes:refresh");
        }
      }
      // The reply box follows the live state: it appears when the agent asks, without a reload.
      var reply = document.querySelector("[data-reply-card]");
      if (reply) { reply.hidden = !(next === "input-required" || next === "auth-required"); }
      // ... and repeats the question next to the box (it was only somewhere up in the timeline).
      var question = document.querySelector("[data-reply-question]");
      if (question) {
        question.textContent = lastAgentText;
        question.hidden = !lastAgentText;
      }
    }

    function renderPresence(msg) {
      var watchers = document.querySelector("[data-watchers]");
      if (watchers && msg.watchers) {
        watchers.textContent = "";
        msg.watchers.forEach(function (w) {
          var li = document.createElement("li");
          li.textContent = w.name || ("user " + w.user_id);
          watchers.appendChild(li);
        });
      }
      var online = document.querySelector("[data-agent-online]");
      // "idle" (reached without error, not lately): the server-rendered "last seen … ago" says it best; kept.
      if (online && msg.agent_online !== undefined && msg.agent_contact !== "idle") {
        // null: never contacted, shown as the server-rendered badge shows it.
        var state = msg.agent_online === null ? "muted" : (msg.agent_online ? "online" : "offline");
        online.textContent = { muted: "not contacted yet", online: "online", offline: "offline" }[state];
        online.className = "badge badge-" + state;
      }
    }

    var socket = new LiveSocket(
      root,
      function () { return basePath + "?after=" + lastSeq; },
      {
        onState: showSocketState,
        onMessage: function (msg) {
          if (msg.type === "event") { render(msg.event); }
          else if (msg.type === "synced") { if (msg.state) { applyState(msg.state); } root.setAttribute("data-synced", "true"); }
          else if (msg.type === "presence") { renderPresence(msg); }
        },
        // A finished task has nothing more to say: do not reconnect forever once we saw its end.
        shouldStop: function () { return Boolean(TERMINAL[state]) && root.getAttribute("data-synced") === "true"; }
      }
    );
    root.hermesSocket = socket;
    // Test hook and debugging aid: drop the connection as a network failure would.
    root.addEventListener("hermes:drop", function () { if (socket.socket) { socket.socket.close(); } });
  }

  function initTaskList(root) {
    var refreshed = false;
    // The newest status heard per task ({state, seq}). A refresh that was read before a status message arrived
    // can land after it: its rows then show an older state, which this puts right after every swap (rows carry
    // the task's last_seq as the server rendered it, so a fresher row is never set back either).
    var latest = {};
    function apply(id) {
      var badge = root.querySelector('[data-task-row="' + id + '"] [data-task-state]');
      if (!badge) { return false; }
      if (latest[id].seq > Number(badge.getAttribute("data-seq") || 0)) {
        setBadge(badge, latest[id].state);
        badge.setAttribute("data-seq", String(latest[id].seq));
      }
      return true;
    }
    root.addEventListener("htmx:afterSwap", function () { Object.keys(latest).forEach(apply); });
    // The connection indicator may live outside the refreshed area (data-live-status="#selector").
    var statusRoot = document.querySelector(root.getAttribute("data-live-status") || "") || root;
    // The list as the filters now read. The filter form swaps the table (and pushes its query to the address bar),
    // so a URL fixed when the page was rendered brought back tasks the filters exclude, under a select still
    // saying "Failed". The form's current values win over the address bar (a filter request may still be on its
    // way); an older page ("before") stays put while the filters it was read with are still the ones selected.
    function currentQuery() {
      var shown = new URLSearchParams(window.location.search);
      var selector = root.getAttribute("data-filters");
      var form = selector && document.querySelector(selector);
      if (!form) { return shown.toString(); }
      var query = new URLSearchParams();
      var same = true;
      new FormData(form).forEach(function (value, name) {
        if (value === "") { if (shown.get(name)) { same = false; } return; }
        query.append(name, value);
        if (shown.get(name) !== value) { same = false; }
      });
      if (same && shown.get("before")) { query.set("before", shown.get("before")); }
      return query.toString();
    }
    function refresh() {
      if (!window.htmx) { return; }
      var query = currentQuery();
      var path = root.getAttribute("data-list-url") + (query ? "?" + query : "");
      window.htmx.ajax("GET", path, { source: root, target: root, swap: "innerHTML" });
    }
    new LiveSocket(
      root,
      function () { return root.getAttribute("data-ws-path"); },
      {
        onState: function (s, detail) {
          setLiveStatus(statusRoot, s, detail);
          // We may have missed changes while away (a dropped connection, or a 1012 after a Redis outage, during
          // which no status message came): the server renders the list again.
          if (s === "open" && refreshed) { refresh(); }
          if (s === "open") { refreshed = true; }
        },
        onMessage: function (msg) {
          if (msg.type !== "task.status" || !msg.task) { return; }
          var id = msg.task.id, seq = Number(msg.task.last_seq || 0);
          if (!latest[id] || seq >= latest[id].seq) { latest[id] = { state: msg.task.state, seq: seq }; }
          // A row the status filter no longer admits ("working" tasks, one of them completes) leaves the list:
          // the server reads it again rather than the page guessing what the filters match.
          var statuses = new URLSearchParams(currentQuery()).getAll("status");
          var leaves = statuses.length && statuses.indexOf(latest[id].state) === -1;
          if (!apply(id) || leaves) { refresh(); }
        }
      }
    );
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-task-timeline]"), initTimeline);
    Array.prototype.forEach.call(document.querySelectorAll("[data-task-list]"), initTaskList);
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();
