// akfak's web console: one page, routed by the URL's hash, reading /api (see README,
// "Seeing inside the broker").  Everything the broker sends is shown as text, never as HTML.
"use strict";

const main = document.getElementById("main");
const statusLine = document.getElementById("status");
let info = { writes_allowed: false };
let page = { gen: 0, timers: [] };

// -- helpers -------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path, options) {
  const response = await fetch("/api/" + path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

function post(path, body) {
  return api(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body || {}) });
}

function enc(s) { return encodeURIComponent(s); }

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : String(v)) + " " + units[i];
}

function num(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }

function when(ms) { return ms === null || ms === undefined || ms < 0 ? "–" : new Date(ms).toISOString().replace("T", " ").replace("Z", ""); }

function duration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return (d ? d + "d " : "") + (d || hh ? hh + "h " : "") + m + "m " + (s % 60) + "s";
}

function table(columns, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.label)))),
    h("tbody", {}, rows));
}

function showError(where, error) {
  where.replaceChildren(h("div", { class: "error" }, String(error.message || error)));
}

// Runs fn now and every ms while this page is shown; errors show in the status line.
function every(ms, fn) {
  const gen = page.gen;
  const run = async () => {
    if (gen !== page.gen) return;
    try { await fn(); statusLine.textContent = "updated " + new Date().toTimeString().slice(0, 8); }
    catch (e) { statusLine.textContent = "error: " + e.message; }
  };
  run();
  page.timers.push(setInterval(run, ms));
}

function current(gen) { return gen === page.gen; }

function writeForm(title, fields, action, onDone) {
  const inputs = {};
  const message = h("span", { class: "muted" });
  const form = h("form", { class: "toolbar", onsubmit: async (event) => {
    event.preventDefault();
    const values = {};
    for (const [name, input] of Object.entries(inputs)) values[name] = input.value;
    try {
      await action(values);
      message.textContent = "done";
      if (onDone) onDone();
    } catch (e) { message.textContent = e.message; }
  } }, h("strong", {}, title));
  for (const f of fields) {
    inputs[f.name] = h("input", { name: f.name, placeholder: f.placeholder || f.name, value: f.value || "", size: f.size || 12 });
    form.append(inputs[f.name]);
  }
  form.append(h("button", { class: buttonClass(title), type: "submit" }, title), message);
  return form;
}

function buttonClass(title) { return /delete/i.test(title) ? "danger" : "primary"; }

// -- overview --------------------------------------------------------------------------------

function overviewPage(root) {
  const cards = h("div", { class: "cards", id: "overview-cards" });
  const listeners = h("div", { class: "panel" });
  const traffic = h("div", { class: "panel", id: "chart-bytes" });
  const rate = h("div", { class: "panel", id: "chart-requests" });
  root.append(h("h1", {}, "Overview"), cards, h("div", { class: "charts" }, traffic, rate), listeners);
  every(2000, async () => {
    const o = await api("overview?seconds=180");
    const t = o.totals;
    const card = (label, value, id) => h("div", { class: "card", id }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
    cards.replaceChildren(
      card("Node", o.node_id, "card-node"), card("Cluster", o.cluster_id), card("Uptime", duration(o.uptime_s)),
      card("Topics", num(t.topics), "card-topics"), card("Partitions", num(t.partitions)),
      card("Records", num(t.records), "card-records"), card("Log size", bytes(t.log_bytes)),
      card("Groups", num(t.groups)), card("Requests", num(t.requests), "card-requests"),
      card("Bytes in", bytes(t.bytes_in)), card("Bytes out", bytes(t.bytes_out)),
      card("Connections seen", num(t.connections)));
    listeners.replaceChildren(h("h2", {}, "Listeners"), table(
      [{ label: "Name" }, { label: "Endpoint" }, { label: "Protocol" }, { label: "Advertised" }],
      o.listeners.map((l) => h("tr", {}, h("td", {}, l.name), h("td", { class: "mono" }, l.endpoint),
        h("td", {}, l.security_protocol), h("td", { class: "mono" }, l.advertised || "–")))),
      h("p", { class: "muted" }, `akfak ${o.version} · Python ${o.python} · ${o.storage} storage in ${o.data_dir} · HTTP ${o.http.join(", ")} · ${o.writes_allowed ? "write actions enabled" : "read-only"}`));
    const pts = (key) => o.series.map((p) => [p.t, p[key]]);
    lineChart(traffic, { title: "Bytes per second", format: bytes, series: [
      { name: "in", color: "#2f6fdf", points: pts("bytes_in") },
      { name: "out", color: "#e0632c", points: pts("bytes_out") }] });
    lineChart(rate, { title: "Requests per second", series: [{ name: "requests", color: "#2e7d32", points: pts("requests") }] });
  });
}

// -- topics -------------------------------------------------------------------------------------

function topicsPage(root) {
  const holder = h("div", { class: "panel" });
  root.append(h("h1", {}, "Topics"));
  if (info.writes_allowed) {
    root.append(h("div", { class: "panel" }, writeForm("Create topic",
      [{ name: "name", size: 20 }, { name: "partitions", value: "1", size: 4 }],
      (v) => post("topics", { name: v.name, partitions: Number(v.partitions || 1) }))));
  }
  root.append(holder);
  every(3000, async () => {
    const topics = await api("topics");
    holder.replaceChildren(table(
      [{ label: "Topic" }, { label: "Partitions", num: true }, { label: "Records", num: true },
        { label: "Size", num: true }, { label: "Produced/s", num: true }, { label: "Committed/s", num: true }, { label: "" }],
      topics.map((t) => h("tr", { "data-topic": t.name },
        h("td", {}, h("a", { href: "#/topics/" + enc(t.name) }, t.name), t.internal ? h("span", { class: "badge" }, " internal") : null),
        h("td", { class: "num" }, t.partitions), h("td", { class: "num" }, num(t.records)),
        h("td", { class: "num" }, bytes(t.size)), h("td", { class: "num" }, t.produce_per_s ?? "–"),
        h("td", { class: "num" }, t.consume_per_s ?? "–"),
        h("td", {}, h("a", { href: `#/browse/${enc(t.name)}/0` }, "messages")))),
      { id: "topics" }));
  });
}

function topicPage(root, name) {
  const gen = page.gen;
  root.append(h("h1", {}, "Topic ", h("span", { class: "mono" }, name)));
  const partitions = h("div", { class: "panel" });
  const configs = h("div", { class: "panel" });
  if (info.writes_allowed) {
    root.append(h("div", { class: "panel" },
      writeForm("Produce", [{ name: "partition", value: "0", size: 3 }, { name: "key" }, { name: "value", size: 24 }, { name: "headers", placeholder: "k=v,k2=v2", size: 16 }],
        (v) => post(`topics/${enc(name)}/partitions/${enc(v.partition || 0)}/produce`, {
          key: v.key === "" ? null : v.key, value: v.value,
          headers: Object.fromEntries((v.headers || "").split(",").filter((s) => s.includes("=")).map((s) => s.split("=", 2))) }), load),
      writeForm("Delete records", [{ name: "partition", value: "0", size: 3 }, { name: "offset", placeholder: "before offset", size: 10 }],
        (v) => post(`topics/${enc(name)}/partitions/${enc(v.partition || 0)}/delete-records`, { offset: Number(v.offset) }), load),
      h("button", { class: "danger", onclick: async () => {
        if (!confirm(`Delete topic ${name}?`)) return;
        try { await post(`topics/${enc(name)}/delete`); location.hash = "#/topics"; } catch (e) { alert(e.message); }
      } }, "Delete topic")));
  }
  root.append(h("h2", {}, "Partitions"), partitions, h("h2", {}, "Configs"), configs);
  async function load() {
    let t;
    try { t = await api("topics/" + enc(name)); } catch (e) { showError(partitions, e); return; }
    if (!current(gen)) return;
    partitions.replaceChildren(
      h("p", { class: "muted" }, `id ${t.topic_id} · replication factor ${t.replication_factor} · produced ${t.produce_per_s ?? "–"}/s · committed ${t.consume_per_s ?? "–"}/s`),
      table([{ label: "Partition", num: true }, { label: "Leader", num: true }, { label: "Start", num: true }, { label: "End", num: true },
        { label: "Stable", num: true }, { label: "Records", num: true }, { label: "Size", num: true }, { label: "Segments", num: true }, { label: "" }],
      t.partitions.map((p) => {
        const row = h("tr", { "data-partition": p.partition },
          h("td", { class: "num" }, p.partition), h("td", { class: "num" }, p.leader),
          h("td", { class: "num" }, num(p.log_start_offset)), h("td", { class: "num" }, num(p.end_offset)),
          h("td", { class: "num" }, num(p.last_stable_offset)), h("td", { class: "num" }, num(p.records)),
          h("td", { class: "num" }, bytes(p.size)), h("td", { class: "num" }, p.segments),
          h("td", {}, h("a", { href: `#/browse/${enc(name)}/${p.partition}` }, "messages"), " ",
            h("button", { class: "segments", onclick: () => segments(row, p.partition) }, "segments")));
        return row;
      }), { id: "partitions" }));
    configs.replaceChildren(table([{ label: "Name" }, { label: "Value" }, { label: "Source" }],
      t.configs.map((c) => h("tr", { class: c.source === "DEFAULT_CONFIG" ? "default" : null, title: c.documentation || "", "data-config": c.name },
        h("td", { class: "mono" }, c.name), h("td", { class: "mono" }, c.value ?? "null"), h("td", {}, c.source))),
      { id: "configs" }));
  }
  async function segments(row, partition) {
    if (row.nextSibling && row.nextSibling.classList.contains("detail")) { row.nextSibling.remove(); return; }
    const list = await api(`topics/${enc(name)}/partitions/${partition}/segments`);
    row.after(h("tr", { class: "detail" }, h("td", { colspan: 9 }, table(
      [{ label: "Base offset", num: true }, { label: "Next offset", num: true }, { label: "Size", num: true },
        { label: "Max timestamp" }, { label: "Aborted txns", num: true }, { label: "File" }],
      list.map((s) => h("tr", {}, h("td", { class: "num" }, num(s.base_offset)), h("td", { class: "num" }, num(s.next_offset)),
        h("td", { class: "num" }, bytes(s.size)), h("td", {}, when(s.max_timestamp)), h("td", { class: "num" }, s.aborted_transactions),
        h("td", { class: "mono" }, s.file || "(memory)")))))));
  }
  load();
}

// -- message browser -------------------------------------------------------------------------

function shown(field, format) {
  if (field === null || field === undefined) return h("span", { class: "muted" }, "null");
  if (format === "hex") return field.hex + (field.size > field.hex.length / 2 ? " …" : "");
  if (format === "json" && field.json) {
    try { return JSON.stringify(JSON.parse(field.text), null, 2); } catch (e) { return field.text; }
  }
  if (field.text !== null) return field.text + (field.truncated ? " …" : "");
  return format === "text" ? h("span", { class: "muted" }, `(${field.size} binary bytes)`) : field.hex;
}

function browsePage(root, topic, partition, search) {
  const gen = page.gen;
  const q = new URLSearchParams(search || "");
  const topicSelect = h("select", { id: "browse-topic" });
  const partitionSelect = h("select", { id: "browse-partition" });
  const offset = h("input", { id: "browse-offset", placeholder: "offset", size: 10, value: q.get("offset") || "" });
  const stamp = h("input", { id: "browse-timestamp", type: "datetime-local", step: "1" });
  const wanted = Math.min(Math.max(Number(q.get("limit")) || 50, 1), 500);
  const limits = [...new Set([20, 50, 100, 200, 500, wanted])].sort((a, b) => a - b);
  const limit = h("select", { id: "browse-limit" }, limits.map((n) => h("option", { value: n, selected: n === wanted }, n)));
  const format = h("select", { id: "browse-format" }, ["auto", "text", "json", "hex"].map((f) => h("option", { value: f, selected: f === (q.get("format") || "auto") }, f)));
  const results = h("div", { class: "panel", id: "records-panel" });
  const go = (params) => {
    const p = new URLSearchParams({ limit: limit.value, format: format.value, ...params });
    location.hash = `#/browse/${enc(topicSelect.value)}/${partitionSelect.value || 0}?${p}`;
  };
  root.append(h("h1", {}, "Messages"), h("div", { class: "toolbar panel" },
    "Topic", topicSelect, "Partition", partitionSelect, "From offset", offset, "or time", stamp, "Limit", limit, "Show", format,
    h("button", { class: "primary", id: "browse-go", onclick: () => {
      if (stamp.value) go({ timestamp: String(new Date(stamp.value).getTime()) });
      else go(offset.value ? { offset: offset.value } : {});
    } }, "Read")), results);
  format.addEventListener("change", () => go(Object.fromEntries([...q].filter(([k]) => k === "offset" || k === "timestamp"))));
  (async () => {
    let topics;
    try { topics = await api("topics"); } catch (e) { showError(results, e); return; }
    if (!current(gen)) return;
    const names = topics.map((t) => t.name);
    topicSelect.replaceChildren(...names.map((n) => h("option", { value: n, selected: n === topic }, n)));
    const fill = () => {
      const t = topics.find((x) => x.name === topicSelect.value);
      partitionSelect.replaceChildren(...Array.from({ length: t ? t.partitions : 0 }, (_, i) => h("option", { value: i, selected: String(i) === String(partition) }, i)));
    };
    topicSelect.addEventListener("change", () => { partition = 0; fill(); });
    fill();
    if (!topic) { results.replaceChildren(h("p", { class: "muted" }, "Pick a topic and partition.")); return; }
    const params = new URLSearchParams({ limit: q.get("limit") || "50" });
    if (q.get("timestamp")) params.set("timestamp", q.get("timestamp"));
    else if (q.get("offset")) params.set("offset", q.get("offset"));
    let page_;
    try { page_ = await api(`topics/${enc(topic)}/partitions/${enc(partition || 0)}/records?${params}`); } catch (e) { showError(results, e); return; }
    if (!current(gen)) return;
    const fmt = format.value;
    results.replaceChildren(
      h("div", { class: "toolbar" },
        h("button", { id: "browse-prev", disabled: page_.start <= page_.log_start_offset, onclick: () => go({ offset: page_.prev_offset }) }, "← Previous"),
        h("button", { id: "browse-next", disabled: page_.next_offset >= page_.end_offset, onclick: () => go({ offset: page_.next_offset }) }, "Next →"),
        h("span", { class: "muted" }, `${page_.records.length} records from offset ${page_.start} · log [${page_.log_start_offset}, ${page_.end_offset}) · last stable ${page_.last_stable_offset}`)),
      table([{ label: "Offset", num: true }, { label: "Timestamp" }, { label: "Key" }, { label: "Value" }, { label: "Headers" }, { label: "" }],
        page_.records.map((r) => h("tr", { class: "record" + (r.control ? " control" : "") + (r.aborted ? " aborted" : ""), "data-offset": r.offset },
          h("td", { class: "num" }, r.offset),
          h("td", { class: "mono" }, when(r.timestamp), r.log_append_time ? h("span", { class: "badge" }, "append time") : null),
          h("td", { class: "key" }, h("pre", {}, r.control ? "" : shown(r.key, fmt))),
          h("td", { class: "value" }, h("pre", {}, r.control ? "" : shown(r.value, fmt))),
          h("td", { class: "headers" }, r.headers.map((hd) => h("div", { class: "mono header" }, hd.key, "=", shown(hd.value, fmt)))),
          h("td", {}, r.control ? h("span", { class: "badge warn" }, "control " + r.control) : null,
            r.aborted ? h("span", { class: "badge bad" }, "aborted") : null,
            r.uncommitted ? h("span", { class: "badge warn" }, "uncommitted") : null,
            r.transactional && !r.aborted && !r.uncommitted && !r.control ? h("span", { class: "badge ok" }, "committed") : null))),
        { id: "records" }));
  })();
}

// -- groups --------------------------------------------------------------------------------------

function groupsPage(root) {
  const holder = h("div", { class: "panel" });
  root.append(h("h1", {}, "Consumer groups"), holder);
  every(3000, async () => {
    const groups = await api("groups");
    holder.replaceChildren(groups.length ? table(
      [{ label: "Group" }, { label: "State" }, { label: "Protocol type" }, { label: "Members", num: true }, { label: "Partitions", num: true }, { label: "Lag", num: true }],
      groups.map((g) => h("tr", { "data-group": g.group },
        h("td", {}, h("a", { href: "#/groups/" + enc(g.group) }, g.group)), h("td", {}, g.state), h("td", {}, g.protocol_type),
        h("td", { class: "num" }, g.members), h("td", { class: "num" }, g.partitions), h("td", { class: "num lag" }, num(g.lag)))),
      { id: "groups" }) : h("p", { class: "muted" }, "No consumer groups."));
  });
}

function groupPage(root, id) {
  const summary = h("div", { class: "panel kv", id: "group-summary" });
  const members = h("div", { class: "panel" });
  const partitions = h("div", { class: "panel" });
  const chart = h("div", { class: "panel", id: "chart-lag" });
  root.append(h("h1", {}, "Group ", h("span", { class: "mono" }, id)), summary);
  if (info.writes_allowed) {
    root.append(h("div", { class: "panel" }, writeForm("Reset offsets",
      [{ name: "topic", size: 16 }, { name: "partition", placeholder: "all", size: 4 }, { name: "to", value: "earliest", placeholder: "earliest|latest|offset", size: 10 }],
      (v) => post(`groups/${enc(id)}/reset-offsets`, v))));
  }
  root.append(h("h2", {}, "Lag per partition"), partitions, chart, h("h2", {}, "Members"), members);
  every(2000, async () => {
    const g = await api("groups/" + enc(id));
    const kv = (k, v) => [h("div", { class: "k" }, k), h("div", {}, v)];
    summary.replaceChildren(...kv("State", g.state), ...kv("Protocol", `${g.protocol_type || "–"} / ${g.protocol || "–"}`),
      ...kv("Generation", g.generation), ...kv("Leader", g.leader || "–"), ...kv("Total lag", num(g.lag)));
    partitions.replaceChildren(table(
      [{ label: "Topic" }, { label: "Partition", num: true }, { label: "Committed", num: true }, { label: "End offset", num: true }, { label: "Lag", num: true }, { label: "Member" }],
      g.partitions.map((p) => h("tr", { "data-tp": `${p.topic}-${p.partition}` },
        h("td", {}, h("a", { href: `#/browse/${enc(p.topic)}/${p.partition}?offset=${p.committed}` }, p.topic)),
        h("td", { class: "num" }, p.partition), h("td", { class: "num committed" }, num(p.committed)),
        h("td", { class: "num end" }, num(p.end_offset)), h("td", { class: "num lag" }, num(p.lag)),
        h("td", { class: "mono" }, p.member_id || "–"))),
      { id: "group-partitions" }));
    lineChart(chart, { title: "Lag over time", format: num, series: [
      { name: "total lag", color: "#e0632c", points: g.lag_history.map((s) => [s.t, s.lag]) }] });
    members.replaceChildren(g.members.length ? table(
      [{ label: "Member" }, { label: "Client id" }, { label: "Host" }, { label: "Subscription" }, { label: "Assignment" }],
      g.members.map((m) => h("tr", {}, h("td", { class: "mono" }, m.member_id), h("td", {}, m.client_id), h("td", {}, m.client_host),
        h("td", {}, (m.subscription || []).join(", ")),
        h("td", { class: "mono" }, m.assignment ? Object.entries(m.assignment).map(([t, ps]) => `${t}: ${ps.join(",")}`).join("; ") : "–"))),
      { id: "group-members" }) : h("p", { class: "muted" }, "No members."));
  });
}

// -- request inspector --------------------------------------------------------------------------

function requestsPage(root) {
  const gen = page.gen;
  let last = 0, paused = false;
  const client = h("input", { id: "filter-client", placeholder: "client id", size: 14 });
  const apiName = h("input", { id: "filter-api", placeholder: "API (e.g. Produce)", size: 14 });
  const connection = h("input", { id: "filter-connection", placeholder: "connection", size: 6 });
  const pause = h("button", { id: "pause", onclick: () => { paused = !paused; pause.textContent = paused ? "Resume" : "Pause"; } }, "Pause");
  const body = h("tbody", {});
  const reset = () => { last = 0; body.replaceChildren(); };
  for (const input of [client, apiName, connection]) input.addEventListener("input", reset);
  root.append(h("h1", {}, "Requests"), h("div", { class: "toolbar panel" }, "Filter", client, apiName, connection, pause,
    h("button", { onclick: reset }, "Clear"), h("span", { class: "muted" }, "Click a request to see its decoded fields.")),
  h("table", { id: "requests" }, h("thead", {}, h("tr", {}, ["#", "Time", "Conn", "Client id", "API", "Request", "Response", "Latency ms", "Errors"].map((c) => h("th", {}, c)))), body));
  async function expand(row, entry) {
    if (row.nextSibling && row.nextSibling.classList && row.nextSibling.classList.contains("detail")) { row.nextSibling.remove(); return; }
    let d;
    try { d = await api("requests/" + entry.seq); } catch (e) { d = { error: e.message }; }
    const part = (title, value) => h("div", {}, h("strong", {}, title), h("pre", { class: "decoded" }, JSON.stringify(value, null, 2)));
    row.after(h("tr", { class: "detail" }, h("td", { colspan: 9 }, d.error ? d.error : d.expired
      ? h("span", { class: "muted" }, "Only the summary of this request is still kept.")
      : h("div", { class: "charts" }, part(`${entry.api} v${entry.version} request`, d.request), part("response", d.response)))));
  }
  every(1000, async () => {
    if (paused) return;
    const p = new URLSearchParams({ since: last });
    if (client.value) p.set("client_id", client.value);
    if (apiName.value) p.set("api", apiName.value);
    if (connection.value) p.set("connection", connection.value);
    const r = await api("requests?" + p);
    if (!current(gen) || paused) return;
    last = r.last;
    for (const e of r.requests) {
      const row = h("tr", { class: "request clickable", "data-api": e.api, "data-seq": e.seq, "data-client": e.client_id || "" },
        h("td", { class: "num" }, e.seq), h("td", { class: "mono" }, new Date(e.time).toTimeString().slice(0, 8)),
        h("td", { class: "num" }, e.connection), h("td", {}, e.client_id ?? "–"), h("td", {}, `${e.api} v${e.version}`),
        h("td", { class: "num" }, bytes(e.request_size)), h("td", { class: "num" }, bytes(e.response_size)),
        h("td", { class: "num" }, e.latency_ms.toFixed(2)),
        h("td", {}, e.errors.map((x) => h("span", { class: "badge bad" }, x))));
      row.addEventListener("click", () => expand(row, e));
      body.prepend(row);
    }
    while (body.children.length > 500) body.lastChild.remove();
  });
}

// -- routing ------------------------------------------------------------------------------------

const routes = [
  [/^#?\/?$/, "overview", (root) => overviewPage(root)],
  [/^#\/topics$/, "topics", (root) => topicsPage(root)],
  [/^#\/topics\/([^/?]+)$/, "topics", (root, m) => topicPage(root, decodeURIComponent(m[1]))],
  [/^#\/browse(?:\/([^/?]+)(?:\/(\d+))?)?(?:\?(.*))?$/, "browse", (root, m) => browsePage(root, m[1] && decodeURIComponent(m[1]), m[2] || 0, m[3])],
  [/^#\/groups$/, "groups", (root) => groupsPage(root)],
  [/^#\/groups\/([^/?]+)$/, "groups", (root, m) => groupPage(root, decodeURIComponent(m[1]))],
  [/^#\/requests$/, "requests", (root) => requestsPage(root)],
];

function route() {
  for (const timer of page.timers) clearInterval(timer);
  page = { gen: page.gen + 1, timers: [] };
  main.replaceChildren();
  const hash = location.hash || "#/";
  for (const [pattern, nav, show] of routes) {
    const m = hash.match(pattern);
    if (!m) continue;
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === nav);
    show(main, m);
    return;
  }
  main.append(h("p", { class: "error" }, "No such page: " + hash));
}

window.addEventListener("hashchange", route);
api("overview?seconds=10").then((o) => { info = o; }).catch(() => {}).finally(route);
