// mailappliance live dashboard: plain JavaScript, no framework, nothing loaded from elsewhere.
// Every value from the API reaches the page through textContent / text nodes (never innerHTML),
// so a hostile subject line or header stays text.
"use strict";

(function () {
  const POLL_MS = 2000;
  const LATEST_LIMIT = 10;
  const EMAILS_PER_PAGE = 25;
  const KEY_STORAGE = "mailappliance.apiKey";
  const QUEUE_STATUSES = ["queued", "sending", "deferred", "sent", "partial", "bounced", "due", "total"];
  const FILTERABLE = new Set(["queued", "sending", "deferred", "sent", "partial", "bounced"]);
  const WAITING = new Set(["queued", "sending", "deferred"]); // only these have a next attempt to show
  const RECORDS = [["incoming", "incoming"], ["successful", "delivered"], ["bounced", "bounced"]];
  const SERIES = [
    { key: "received", label: "Received" },
    { key: "delivered", label: "Delivered" },
    { key: "bounced", label: "Bounced" },
  ];
  const PROTOCOLS = ["smtp", "lmtp", "imap"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    key: null,
    generation: 0, // bumped on sign-in / sign-out so a late poll from before is ignored
    timer: null,
    pollToken: null,
    emailsStatus: "",
    emailsPage: 1,
    emailsPages: 1,
    openMessageId: null,
    messageContent: null, // the open message's parsed content, read once; polls ask for content=false
    rendered: new Map(), // panel -> JSON it was last drawn from (redraw only on change)
    minutes: [], // the chart's last data, drawn again when the width changes
    chartWidth: 0,
  };

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- DOM helpers

  /** Build an element; string children become text nodes, never markup. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    setProps(node, props);
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, props, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setProps(node, props);
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function setProps(node, props) {
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function notice(node, text, kind) {
    node.textContent = text;
    node.classList.toggle("error", kind === "error");
    show(node, Boolean(text));
  }

  /** True (and remembered) when ``data`` differs from what ``panel`` was last drawn from. */
  function changed(panel, data) {
    // generated_at alone changing is no reason to redraw (and lose the focus on a tile).
    const json = JSON.stringify(data, (key, value) => (key === "generated_at" ? undefined : value));
    if (state.rendered.get(panel) === json) return false;
    state.rendered.set(panel, json);
    return true;
  }

  // ---------------------------------------------------------------- formatting

  const dash = "\u2014";

  function count(value) {
    return typeof value === "number" ? value.toLocaleString("en-US") : dash;
  }

  /** Date and time (local), "2026-11-24 13:05:09": for table cells and the message view. */
  function when(iso) {
    if (!iso) return dash;
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return `${date.toLocaleDateString("en-CA")} ${date.toLocaleTimeString("en-GB", { hour12: false })}`;
  }

  /** The time alone for today, else the date and time: for the compact activity feeds. */
  function whenShort(iso) {
    const full = when(iso);
    if (full === dash || full === String(iso)) return full;
    return new Date(iso).toDateString() === new Date().toDateString() ? full.slice(11) : full;
  }

  function clock() {
    return new Date().toLocaleTimeString("en-GB", { hour12: false });
  }

  /** The next attempt only while the message waits for one (not once sent or bounced). */
  function nextAttempt(doc) {
    return WAITING.has(doc.status) ? when(doc.next_attempt_at) : dash;
  }

  /**
   * "2", or "1 since the last retry (3 in total)": a retry by hand starts ``attempts`` again
   * (a fresh budget); the history keeps every attempt, one entry per domain, all entries of
   * one attempt with the same time (the CLI's queue show counts the same way).
   */
  function attemptsText(doc) {
    const since = Number(doc.attempts) || 0;
    const runs = new Set((doc.history || []).map((h) => h && h.at).filter(Boolean)).size;
    const total = Math.max(since, runs);
    return total > since ? `${since} since the last retry (${total} in total)` : String(since);
  }

  function bytes(value) {
    if (typeof value !== "number") return dash;
    if (value === 0) return "0 B";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    const power = Math.min(Math.floor(Math.log(value) / Math.log(1024)), units.length - 1);
    const scaled = value / 1024 ** power;
    return `${power === 0 ? scaled : scaled.toFixed(1)} ${units[power]}`;
  }

  function list(values) {
    return Array.isArray(values) && values.length ? values.join(", ") : dash;
  }

  function addresses(values) {
    if (!Array.isArray(values)) return dash;
    return list(values.map((v) => (typeof v === "string" ? v : v && v.address)).filter(Boolean));
  }

  function badge(status) {
    return el("span", { class: `badge status-${String(status || "unknown").replace(/[^a-z+]/g, "")}` }, status || dash);
  }

  function clip(text, length) {
    const value = text === null || text === undefined ? "" : String(text);
    return value.length > length ? `${value.slice(0, length - 1)}\u2026` : value;
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options = {}) {
    const headers = { Accept: "application/json", "x-api-key": state.key || "" };
    let body;
    if (options.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.json);
    }
    let response;
    try {
      response = await fetch(path, {
        method: options.method || "GET",
        headers,
        body,
        cache: "no-store",
        credentials: "omit",
      });
    } catch (error) {
      throw new ApiError(0, `cannot reach the appliance (${error.message})`);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (!response.ok) {
      const message = data && typeof data.message === "string" ? data.message : response.statusText;
      throw new ApiError(response.status, `${response.status} ${message}`.trim());
    }
    return data;
  }

  // ---------------------------------------------------------------- sign-in

  async function signIn(key) {
    const generation = ++state.generation;
    state.key = key;
    try {
      await api("/api/email-stats");
    } catch (error) {
      if (error.status === 401 || error.status === 0) {
        state.key = null;
        const text = error.status === 401
          ? "Wrong API key (the appliance answered 401)."
          : `Could not sign in: ${error.message}`;
        notice($("signin-error"), text, "error");
        $("api-key").select();
        return;
      }
      // Any other answer means the key was accepted; that panel reports its own problem.
    }
    if (generation !== state.generation) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    notice($("signin-error"), "");
    $("api-key").value = "";
    show($("signin-panel"), false);
    show($("dashboard"), true);
    show($("sign-out"), true);
    poll();
  }

  function signOut(reason) {
    state.generation++;
    state.key = null;
    clearTimeout(state.timer);
    sessionStorage.removeItem(KEY_STORAGE);
    state.rendered.clear();
    state.openMessageId = null;
    for (const id of ["queue-counts", "record-counts", "throughput-chart", "throughput-legend", "connections-body",
      "latest-deliveries", "latest-bounces", "latest-incoming", "emails-body", "mailboxes-body"]) {
      $(id).replaceChildren();
    }
    show($("message-view"), false);
    show($("dashboard"), false);
    show($("sign-out"), false);
    show($("signin-panel"), true);
    notice($("signin-error"), reason || "", "error");
    $("live-status").textContent = "signed out";
    $("api-key").focus();
  }

  // ---------------------------------------------------------------- polling

  function emailsPath() {
    const params = new URLSearchParams({ page: String(state.emailsPage), limit: String(EMAILS_PER_PAGE) });
    if (state.emailsStatus) params.set("status", state.emailsStatus);
    return `/api/emails?${params}`;
  }

  function panels() {
    const latest = `limit=${LATEST_LIMIT}`;
    const work = [
      ["stats", () => api("/api/email-stats"), renderStats],
      ["connections", () => Promise.all(PROTOCOLS.map((p) => api(`/api/${p}/stats`))), renderConnections],
      ["deliveries", () => api(`/api/successful-emails?${latest}`), renderDeliveries],
      ["bounces", () => api(`/api/bounced-emails?${latest}`), renderBounces],
      ["incoming", () => api(`/api/incoming-emails?${latest}`), renderIncoming],
      ["emails", () => api(emailsPath()), renderEmails],
      ["mailboxes", () => api("/api/mailboxes?limit=500"), renderMailboxes],
    ];
    if (state.openMessageId) {
      const id = state.openMessageId;
      const query = state.messageContent ? "?content=false" : "";
      work.push(["message", () => api(`/api/emails/${encodeURIComponent(id)}${query}`), (doc) => renderMessage(doc, id)]);
    }
    return work;
  }

  /** Fetch every panel at once; each draws itself only when its data changed. */
  async function refresh() {
    const generation = state.generation;
    const work = panels();
    const results = await Promise.allSettled(work.map(([, load]) => load()));
    if (generation !== state.generation) return;
    const failures = [];
    results.forEach((result, index) => {
      const [name, , draw] = work[index];
      if (result.status === "fulfilled") {
        if (changed(name, result.value)) draw(result.value);
      } else {
        failures.push([name, result.reason]);
      }
    });
    const refused = failures.find(([, error]) => error.status === 401);
    if (refused) {
      signOut("The appliance no longer accepts this API key (401): sign in again.");
      return;
    }
    for (const [name, error] of failures) {
      if (name === "message" && error.status === 404) closeMessage("This message no longer exists.");
    }
    const stamp = `live \u00b7 updated ${clock()}`;
    $("live-status").textContent = failures.length
      ? `${stamp} \u00b7 ${failures.map(([name, error]) => `${name}: ${error.message}`).join("; ")}`
      : stamp;
    $("live-status").classList.toggle("degraded", failures.length > 0);
  }

  /** Refresh now, then every POLL_MS; of overlapping calls only the latest schedules the next. */
  async function poll() {
    const token = {};
    state.pollToken = token;
    clearTimeout(state.timer);
    await refresh();
    if (state.key && state.pollToken === token && !document.hidden) state.timer = setTimeout(poll, POLL_MS);
  }

  // A hidden tab stops asking; it refreshes at once when shown again.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(state.timer);
    else if (state.key) poll();
  });

  // ---------------------------------------------------------------- stats and chart

  function countTile(id, label, value, status) {
    const body = [el("span", { class: "value", id, "data-testid": id }, count(value)), el("span", { class: "label" }, label)];
    if (!status) return el("div", { class: "count" }, body);
    return el("button", {
      type: "button",
      class: `count filter${state.emailsStatus === status ? " active" : ""}`,
      title: `Show ${status} messages`,
      "aria-pressed": state.emailsStatus === status ? "true" : "false",
      onclick: () => setEmailsFilter(state.emailsStatus === status ? "" : status),
    }, body);
  }

  function renderStats(stats) {
    const queue = stats.queue || {};
    $("queue-counts").replaceChildren(...QUEUE_STATUSES.map((status) =>
      countTile(`queue-${status}`, status, queue[status], FILTERABLE.has(status) ? status : null)));
    const records = stats.records || {};
    const day = stats.last_24h || {};
    $("record-counts").replaceChildren(
      ...RECORDS.map(([key, label]) => countTile(`records-${key}`, label, records[key])),
      ...SERIES.map(({ key }) => countTile(`day-${key}`, `${key}, 24 h`, day[key])),
    );
    renderChart(Array.isArray(stats.per_minute) ? stats.per_minute : []);
  }

  /** A round grid step (1, 2 or 5 times a power of ten) giving at most five whole-number rows. */
  function gridStep(peak) {
    for (let magnitude = 1; ; magnitude *= 10) {
      for (const step of [1, 2, 5]) {
        if (step * magnitude * 5 >= peak) return step * magnitude;
      }
    }
  }

  /** A line chart of the per-minute series, drawn as SVG (oldest minute on the left). */
  function renderChart(minutes) {
    state.minutes = minutes;
    // Drawn at the width it is shown at (one SVG unit per CSS pixel), so the labels keep
    // their size on a phone instead of shrinking with a fixed viewBox.
    const shown = $("throughput-chart").clientWidth;
    const width = Math.round(Math.max(280, Math.min(shown || 720, 1200)));
    state.chartWidth = width;
    const narrow = width < 480;
    const height = narrow ? 200 : 220;
    const pad = { left: 40, right: narrow ? 16 : 24, top: 12, bottom: 28 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const peak = Math.max(0, ...minutes.flatMap((m) => SERIES.map(({ key }) => Number(m[key]) || 0)));
    const step = gridStep(peak);
    const rowsCount = Math.max(1, Math.ceil(peak / step));
    const top = step * rowsCount;
    const n = Math.max(minutes.length, 2);
    const x = (i) => pad.left + (plotW * i) / (n - 1);
    const y = (v) => pad.top + plotH - (plotH * v) / top;
    const totals = Object.fromEntries(SERIES.map(({ key }) => [key, minutes.reduce((s, m) => s + (Number(m[key]) || 0), 0)]));

    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-labelledby": "throughput-svg-title",
      class: "throughput",
    });
    chart.append(svg("title", { id: "throughput-svg-title" },
      `Per minute over the last ${minutes.length} minutes: ${SERIES.map(({ key, label }) => `${label.toLowerCase()} ${totals[key]}`).join(", ")}`));

    for (let i = 0; i <= rowsCount; i++) {
      const gy = y(step * i);
      chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: gy, y2: gy, class: i === 0 ? "axis" : "grid" }));
      chart.append(svg("text", { x: pad.left - 6, y: gy + 4, class: "tick", "text-anchor": "end" }, String(step * i)));
    }
    minutes.forEach((minute, i) => {
      if ((minutes.length - 1 - i) % (narrow ? 20 : 10) !== 0) return;
      const date = new Date(minute.minute);
      const label = Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
      chart.append(svg("line", { x1: x(i), x2: x(i), y1: pad.top + plotH, y2: pad.top + plotH + 4, class: "axis" }));
      chart.append(svg("text", { x: x(i), y: height - 8, class: "tick", "text-anchor": "middle" }, label));
    });
    for (const { key } of SERIES) {
      const points = minutes.map((m, i) => `${x(i).toFixed(1)},${y(Number(m[key]) || 0).toFixed(1)}`).join(" ");
      if (points) chart.append(svg("polyline", { points, class: `series series-${key}` }));
    }
    // One transparent band per minute with a tooltip listing that minute's figures.
    const band = plotW / (n - 1);
    minutes.forEach((minute, i) => {
      const date = new Date(minute.minute);
      const label = Number.isNaN(date.getTime()) ? String(minute.minute) : date.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
      chart.append(svg("rect", { x: x(i) - band / 2, y: pad.top, width: band, height: plotH, class: "hover" },
        svg("title", {}, `${label}: ${SERIES.map(({ key, label: name }) => `${name.toLowerCase()} ${Number(minute[key]) || 0}`).join(", ")}`)));
    });
    $("throughput-chart").replaceChildren(chart);
    $("throughput-legend").replaceChildren(...SERIES.map(({ key, label }) =>
      el("li", { "data-testid": `legend-${key}` }, el("span", { class: `swatch series-${key}`, "aria-hidden": "true" }),
        `${label} `, el("strong", { id: `throughput-total-${key}` }, count(totals[key])), el("span", { class: "muted" }, " in the hour"))));
  }

  // ---------------------------------------------------------------- connections

  /** ServerStats.tls: "implicit" (TLS from the first byte), "starttls" or "none". */
  function tlsMode(value) {
    if (value === "starttls") return "STARTTLS";
    if (value === "implicit") return "implicit";
    if (value === true) return "yes";
    return dash;
  }

  function renderConnections(answers) {
    const rows = [];
    for (const answer of answers) {
      const protocol = answer && answer.protocol ? answer.protocol : "?";
      const ports = Array.isArray(answer && answer.ports) ? answer.ports : [];
      for (const port of ports) {
        rows.push(el("tr", { "data-testid": "listener-row", "data-protocol": protocol, "data-port": port.port },
          el("td", {}, protocol.toUpperCase()),
          el("td", {}, port.name || dash),
          el("td", { class: "num" }, port.port === undefined ? dash : String(port.port)),
          el("td", {}, tlsMode(port.tls)),
          ...["current_connections", "total_connections", "rejected_connections", "messages_accepted", "messages_rejected"]
            .map((field) => el("td", { class: "num" }, count(port[field]))),
          el("td", { class: "num" }, bytes(port.bytes_received)),
          ...["tls_sessions", "auth_failures", "errors"].map((field) => el("td", { class: "num" }, count(port[field]))),
        ));
      }
      const totals = (answer && answer.totals) || {};
      if (ports.length > 1) {
        rows.push(el("tr", { class: "totals", "data-testid": "listener-totals", "data-protocol": protocol },
          el("td", {}, protocol.toUpperCase()), el("td", {}, "all ports"), el("td", {}), el("td", {}),
          ...["current_connections", "total_connections", "rejected_connections", "messages_accepted", "messages_rejected"]
            .map((field) => el("td", { class: "num" }, count(totals[field]))),
          el("td", { class: "num" }, bytes(totals.bytes_received)),
          ...["tls_sessions", "auth_failures", "errors"].map((field) => el("td", { class: "num" }, count(totals[field]))),
        ));
      }
    }
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 13, class: "empty" }, "No mail listeners are running.")));
    $("connections-body").replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- latest activity

  function feed(id, items, empty, render) {
    const entries = Array.isArray(items) ? items : [];
    $(id).replaceChildren(...(entries.length ? entries.map(render) : [el("li", { class: "empty" }, empty)]));
  }

  function openable(emailId, ...children) {
    if (!emailId) return el("div", { class: "entry" }, children);
    return el("button", { type: "button", class: "entry", title: "Open the message", onclick: () => openMessage(emailId) }, children);
  }

  function renderDeliveries(data) {
    feed("latest-deliveries", data.emails, "Nothing delivered yet.", (r) =>
      el("li", { "data-testid": "delivery-item", "data-email-id": r.email_id || "" }, openable(r.email_id,
        el("span", { class: "line" }, el("strong", {}, r.recipient || dash), el("span", { class: "time", title: when(r.delivered_at) }, whenShort(r.delivered_at))),
        el("span", { class: "meta" }, `${r.code || ""} via ${r.mx_host || dash}${r.tls ? " (TLS)" : ""} \u00b7 from ${r.from || "<>"}`))));
  }

  /** "550 5.1.1 no such user", not "550 550 5.1.1 ...": the code only when the text lacks it. */
  function withCode(code, text) {
    const reply = text ? String(text) : "";
    return code && !reply.includes(String(code)) ? `${code} ${reply}`.trim() : reply;
  }

  function renderBounces(data) {
    feed("latest-bounces", data.emails, "No bounces.", (r) =>
      el("li", { "data-testid": "bounce-item", "data-email-id": r.email_id || "" }, openable(r.email_id,
        el("span", { class: "line" }, el("strong", {}, r.recipient || dash), el("span", { class: "time", title: when(r.bounced_at) }, whenShort(r.bounced_at))),
        el("span", { class: "meta" }, badge(r.bounce_type), ` ${clip(withCode(r.code, r.reason || r.response), 120)}`))));
  }

  function renderIncoming(data) {
    feed("latest-incoming", data.emails, "No mail received yet.", (m) =>
      el("li", { "data-testid": "incoming-item", "data-id": m.id || "" }, el("div", { class: "entry" },
        el("span", { class: "line" }, el("strong", {}, m.subject || "(no subject)"), el("span", { class: "time", title: when(m.received_at) }, whenShort(m.received_at))),
        el("span", { class: "meta" }, `${m.sender || "<>"} \u2192 ${list(m.recipients)} \u00b7 ${bytes(m.size)} \u00b7 ${(m.source || "").toUpperCase()}${m.tls ? " TLS" : ""}`))));
  }

  // ---------------------------------------------------------------- outbound queue table

  function setEmailsFilter(status) {
    state.emailsStatus = status;
    state.emailsPage = 1;
    $("emails-status").value = status;
    state.rendered.delete("stats"); // redraw the tiles so the active filter shows
    poll();
  }

  function renderEmails(data) {
    const emails = Array.isArray(data.emails) ? data.emails : [];
    state.emailsPages = Math.max(1, Number(data.pages) || 1);
    $("emails-total").textContent = `${count(data.total)} message${data.total === 1 ? "" : "s"}`;
    $("emails-page").textContent = `page ${state.emailsPage} of ${state.emailsPages}`;
    $("emails-prev").disabled = state.emailsPage <= 1;
    $("emails-next").disabled = state.emailsPage >= state.emailsPages;
    const rows = emails.map((m) => el("tr", {
      "data-testid": "email-row", "data-id": m.id, "data-status": m.status,
      class: m.id === state.openMessageId ? "selected" : null,
    },
    el("td", { class: "nowrap" }, when(m.created_at)),
    el("td", {}, m.from || "<>"),
    el("td", {}, addresses(m.to && m.to.length ? m.to : m.recipients)),
    el("td", {}, clip(m.subject || "(no subject)", 80)),
    el("td", {}, badge(m.status)),
    el("td", { class: "num" }, count(m.attempts)),
    el("td", { class: "nowrap" }, nextAttempt(m)),
    el("td", { class: "last-error", title: m.last_error || "" }, clip(m.last_error || "", 60)),
    el("td", {}, el("button", {
      type: "button", class: "small", "data-testid": "email-view", "aria-label": `View message ${m.subject || m.id}`,
      onclick: () => openMessage(m.id),
    }, "View"))));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 9, class: "empty" }, "No messages.")));
    $("emails-body").replaceChildren(...rows);
    $("emails-error").hidden = true;
  }

  // ---------------------------------------------------------------- message view

  function openMessage(id) {
    state.openMessageId = id;
    state.messageContent = null;
    state.rendered.delete("message");
    state.rendered.delete("emails");
    notice($("message-result"), "");
    $("message-title").textContent = "Message";
    show($("message-view"), true);
    poll().then(() => $("message-view").scrollIntoView({ block: "start" }));
  }

  function closeMessage(text) {
    state.openMessageId = null;
    state.messageContent = null;
    state.rendered.delete("message");
    state.rendered.delete("emails");
    show($("message-view"), false);
    if (text) notice($("emails-error"), text);
  }

  function rowsOf(tableId, rows, columns, empty) {
    const body = $(tableId).tBodies[0];
    const built = rows.map((row) => el("tr", {}, row.map((cell, i) => el("td", { class: columns[i] || null }, cell))));
    if (!built.length) built.push(el("tr", {}, el("td", { colspan: columns.length, class: "empty" }, empty)));
    body.replaceChildren(...built);
  }

  function renderMessage(doc, id) {
    if (id !== state.openMessageId) return;
    $("message-view").dataset.id = doc.id || id;
    $("message-title").textContent = doc.subject ? `Message: ${doc.subject}` : "Message";
    const status = $("message-status");
    status.textContent = doc.status || dash;
    status.className = `badge status-${String(doc.status || "unknown").replace(/[^a-z+]/g, "")}`;
    const summary = [
      ["Id", doc.id], ["Queue id", doc.queue_id], ["Message-ID", doc.message_id], ["From", doc.from || "<>"],
      ["To", addresses(doc.to)], ["Subject", doc.subject], ["Size", bytes(doc.size)], ["Source", doc.source],
      ["Attempts", attemptsText(doc)], ["Created", when(doc.created_at)], ["Updated", when(doc.updated_at)],
      ["Last attempt", when(doc.last_attempt_at)], ["Next attempt", nextAttempt(doc)], ["Last error", doc.last_error],
    ];
    $("message-summary").replaceChildren(...summary.flatMap(([term, value]) =>
      [el("dt", {}, term), el("dd", { "data-field": term }, value === undefined || value === null || value === "" ? dash : String(value))]));
    rowsOf("message-recipients", (doc.recipients || []).map((r) =>
      [r.address || dash, badge(r.status), count(r.attempts), r.code ? String(r.code) : dash, r.response || dash]),
    ["", "", "num", "", ""], "No recipients.");
    rowsOf("message-history", (doc.history || []).map((h) =>
      [when(h.at), h.domain || dash, h.mx_host || dash, h.ip || dash, h.ip_source || dash, h.tls ? "yes" : "no",
        typeof h.reply === "string" ? h.reply : JSON.stringify(h.reply ?? null), typeof h.seconds === "number" ? h.seconds.toFixed(2) : dash]),
    ["nowrap", "", "", "", "", "", "reply", "num"], "No delivery attempts yet.");
    if (doc.message) state.messageContent = doc.message;
    const message = state.messageContent || {};
    rowsOf("message-headers", (message.headers || []).map(([name, value]) => [String(name), String(value)]),
      ["header-name", "header-value"], "No headers.");
    const text = $("message-text");
    if (typeof message.text === "string") text.textContent = message.text;
    else if (typeof message.html === "string") text.textContent = `(HTML only, ${message.html.length} characters)`;
    else text.textContent = "(no text part)";
    const attachments = message.attachments || [];
    $("message-attachments").replaceChildren(...(attachments.length
      ? attachments.map((a) => el("li", { "data-testid": "attachment" }, el("strong", {}, a.filename || "(unnamed)"),
        ` ${a.contentType || "application/octet-stream"}, ${bytes(a.size)}`))
      : [el("li", { class: "empty" }, "No attachments.")]));
  }

  async function retryMessage() {
    const id = state.openMessageId;
    if (!id) return;
    try {
      const answer = await api(`/api/emails/${encodeURIComponent(id)}/retry`, { method: "POST" });
      notice($("message-result"), `Retry: ${answer.result}${answer.message ? ` \u2014 ${answer.message}` : ""}`);
    } catch (error) {
      notice($("message-result"), error.status === 409 ? `Nothing to retry: ${error.message}` : `Retry failed: ${error.message}`, "error");
    }
    state.rendered.delete("message");
    poll();
  }

  async function deleteMessage() {
    const id = state.openMessageId;
    if (!id || !window.confirm("Delete this message from the outbound queue?")) return;
    try {
      const answer = await api(`/api/emails/${encodeURIComponent(id)}`, { method: "DELETE" });
      if (answer.result === "deleted") closeMessage(`Message ${id} deleted.`);
      else notice($("message-result"), `Delete: ${answer.result}${answer.message ? ` \u2014 ${answer.message}` : ""}`);
    } catch (error) {
      notice($("message-result"), `Delete failed: ${error.message}`, "error");
    }
    poll();
  }

  // ---------------------------------------------------------------- mailboxes

  function renderMailboxes(data) {
    const boxes = Array.isArray(data.mailboxes) ? data.mailboxes : [];
    $("mailboxes-total").textContent = `${count(data.total)} mailbox${data.total === 1 ? "" : "es"}`;
    const rows = boxes.map((box) => el("tr", { "data-testid": "mailbox-row", "data-username": box.username },
      el("td", {}, box.username),
      el("td", { class: "num" }, box.quota ? bytes(box.quota) : "unlimited"),
      el("td", { class: "num" }, bytes(box.usedBytes)),
      el("td", { class: "nowrap" }, when(box.createdAt)),
      el("td", { class: "actions" },
        el("button", {
          type: "button", class: "small", "aria-label": `Change the password of ${box.username}`,
          onclick: () => {
            $("passwd-username").value = box.username;
            $("passwd-old").focus();
          },
        }, "Password"),
        el("button", {
          type: "button", class: "small danger", "data-testid": "mailbox-delete", "aria-label": `Delete ${box.username}`,
          onclick: () => deleteMailbox(box.username),
        }, "Delete"))));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No mailboxes.")));
    $("mailboxes-body").replaceChildren(...rows);
  }

  async function mailboxAction(work, success) {
    try {
      await work();
      notice($("mailbox-result"), success);
      state.rendered.delete("mailboxes");
      poll();
      return true;
    } catch (error) {
      notice($("mailbox-result"), error.message, "error");
      return false;
    }
  }

  async function createMailbox(event) {
    event.preventDefault();
    const username = $("new-username").value.trim();
    const body = { username, password: $("new-password").value };
    const quota = $("new-quota").value.trim();
    if (quota !== "") body.quota = Number(quota);
    const done = await mailboxAction(() => api("/api/mailboxes", { method: "POST", json: body }), `Mailbox ${username} created.`);
    if (done) $("mailbox-create").reset();
  }

  async function changePassword(event) {
    event.preventDefault();
    const username = $("passwd-username").value.trim();
    const body = { oldPassword: $("passwd-old").value, newPassword: $("passwd-new").value };
    const done = await mailboxAction(
      () => api(`/api/mailboxes/${encodeURIComponent(username)}/change-password`, { method: "POST", json: body }),
      `Password of ${username} changed.`);
    if (done) $("mailbox-password").reset();
  }

  async function deleteMailbox(username) {
    if (!window.confirm(`Delete ${username} with all its folders and messages?`)) return;
    await mailboxAction(() => api(`/api/mailboxes/${encodeURIComponent(username)}`, { method: "DELETE" }), `Mailbox ${username} deleted.`);
  }

  // ---------------------------------------------------------------- wiring

  /** Draw the chart again when its width changed (a rotated phone, a resized window). */
  function redrawChartOnResize() {
    let pending = null;
    window.addEventListener("resize", () => {
      clearTimeout(pending);
      pending = setTimeout(() => {
        const shown = $("throughput-chart").clientWidth;
        if (state.key && shown && Math.abs(shown - state.chartWidth) > 8) renderChart(state.minutes);
      }, 150);
    });
  }

  function start() {
    redrawChartOnResize();
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("api-key").value.trim();
      if (key) signIn(key);
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    $("emails-status").addEventListener("change", (event) => setEmailsFilter(event.target.value));
    $("emails-prev").addEventListener("click", () => {
      state.emailsPage = Math.max(1, state.emailsPage - 1);
      poll();
    });
    $("emails-next").addEventListener("click", () => {
      state.emailsPage = Math.min(state.emailsPages, state.emailsPage + 1);
      poll();
    });
    $("message-retry").addEventListener("click", retryMessage);
    $("message-delete").addEventListener("click", deleteMessage);
    $("message-close").addEventListener("click", () => closeMessage(""));
    $("mailbox-create").addEventListener("submit", createMailbox);
    $("mailbox-password").addEventListener("submit", changePassword);
    const saved = sessionStorage.getItem(KEY_STORAGE);
    if (saved) signIn(saved);
    else $("api-key").focus();
  }

  start();
}());
