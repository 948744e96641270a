// edged dashboard: polls the reporter's JSON snapshot (stats?history=N,
// one sample a second with its 1/10/100 s averages) and draws small SVG
// charts. No external assets and no libraries: the admin address may be on
// a host without internet, and the page's Content-Security-Policy allows
// only this origin. Server-supplied strings (queue names are user ids) are
// set with textContent, never as HTML.
"use strict";

const HISTORY = 120; // samples drawn per chart (two minutes at 1 s)
const POLL_MS = 1000;
const COLORS = ["#4fb3ff", "#f0883e", "#a371f7", "#3fb950", "#db61a2", "#e3b341", "#76e3ea", "#ff7b72"];
const SVGNS = "http://www.w3.org/2000/svg";

// Each chart names its figures (exact names or a pattern) and a unit for
// the numbers shown; figures a server does not report are left out.
const CHARTS = [
  { title: "Connections", figures: ["connections"], fallback: ["conns"], unit: "" },
  { title: "Messages per second", figures: ["messages_in", "messages_out"], labels: ["in", "delivered"], unit: "/s" },
  { title: "Deliveries per second", figures: ["inbox_stored", "deliveries_dropped", "inbox_full"], labels: ["stored in inboxes", "dropped", "inbox full"], unit: "/s" },
  { title: "Output queued (bytes)", figures: ["loop_queued_bytes"], unit: "B" },
  { title: "Cross-loop queue (messages)", figures: ["loop_queue_len"], unit: "" },
  { title: "Queue alarms", figures: ["alarms"], unit: "" },
  { title: "Event loop busy time", pattern: /^loop(\d+)_util$/, unit: "%" },
  { title: "Memory", figures: ["rss", "heap"], labels: ["RSS", "Go heap"], unit: "B" },
  { title: "GC pause (seconds per second)", figures: ["gc_pause"], unit: "s/s" },
  { title: "GC cycles per second", figures: ["gc_cycles"], unit: "/s" },
];

function fmt(v, unit) {
  if (v === undefined || v === null || Number.isNaN(v)) return "–";
  if (unit === "%") return (v * 100).toFixed(1) + "%";
  if (unit === "B") {
    const k = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < k.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + k[i];
  }
  if (unit === "s/s") return v.toExponential(2);
  if (Number.isInteger(v)) return String(v);
  return v.toFixed(Math.abs(v) >= 100 ? 0 : 1);
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// charts holds the DOM of each chart, built on first use.
const charts = new Map();

function chartDOM(def) {
  let c = charts.get(def.title);
  if (c) return c;
  const card = el("div", "card chart");
  card.appendChild(el("h2", "", def.title));
  const svg = document.createElementNS(SVGNS, "svg");
  svg.setAttribute("viewBox", "0 0 " + HISTORY + " 100");
  svg.setAttribute("preserveAspectRatio", "none");
  card.appendChild(svg);
  const legend = el("div", "legend");
  card.appendChild(legend);
  document.getElementById("charts").appendChild(card);
  c = { svg, legend, lines: new Map() };
  charts.set(def.title, c);
  return c;
}

function pick(def, byName) {
  if (def.pattern) {
    return [...byName.values()].filter(f => def.pattern.test(f.name))
      .map(f => ({ f, label: "loop " + f.name.match(def.pattern)[1] }));
  }
  let names = def.figures.filter(n => byName.has(n));
  if (names.length === 0 && def.fallback) names = def.fallback.filter(n => byName.has(n));
  return names.map(n => ({ f: byName.get(n), label: def.labels ? def.labels[def.figures.indexOf(n)] || n : n }));
}

function drawChart(def, byName) {
  const series = pick(def, byName);
  if (series.length === 0) return;
  const c = chartDOM(def);
  let top = 0;
  for (const s of series) for (const v of s.f.history || []) top = Math.max(top, v);
  if (def.unit === "%") top = Math.max(top, 1);
  top = top > 0 ? top * 1.1 : 1;
  c.legend.replaceChildren();
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    let line = c.lines.get(s.f.name);
    if (!line) {
      line = document.createElementNS(SVGNS, "polyline");
      line.setAttribute("stroke", color);
      c.svg.appendChild(line);
      c.lines.set(s.f.name, line);
    }
    const h = s.f.history || [];
    const x0 = HISTORY - h.length;
    line.setAttribute("points", h.map((v, j) => (x0 + j) + "," + (100 - 100 * v / top).toFixed(2)).join(" "));
    const row = el("div", "avgs");
    const key = el("span", "", "■ " + s.label);
    key.style.color = color;
    row.appendChild(key);
    row.appendChild(document.createTextNode(
      fmt(s.f.value, def.unit) + " · " + fmt(s.f.avg1, def.unit) + " · " + fmt(s.f.avg10, def.unit) + " · " + fmt(s.f.avg100, def.unit)));
    c.legend.appendChild(row);
  });
}

function fillTable(id, rows, alarm) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = el("tr", alarm && alarm(r) ? "alarm" : "");
    for (const v of r.cells) tr.appendChild(el("td", "", String(v)));
    body.appendChild(tr);
  }
}

function render(snap) {
  const byName = new Map(snap.figures.map(f => [f.name, f]));
  for (const def of CHARTS) drawChart(def, byName);
  for (const node of document.querySelectorAll("[data-metric]")) {
    const name = node.dataset.metric;
    let f = byName.get(name);
    if (!f && name === "connections") f = byName.get("conns");
    if (!f) continue;
    node.textContent = name === "connections" || name === "alarms" ? String(Math.round(f.value)) : fmt(f.value, "/s");
    if (name === "alarms") node.parentElement.classList.toggle("alarm", f.value > 0);
  }
  fillTable("alarms", snap.alarms.map(a => ({ cells: [a.kind, a.name, a.len, a.threshold, new Date(a.since).toLocaleTimeString()] })), () => true);
  fillTable("queues", snap.top_queues.map(q => ({ alarm: q.alarm, cells: [q.kind, q.name, q.len] })), r => r.alarm);
  fillTable("loops", snap.loops.map(l => ({ cells: [l.loop, l.conns, (l.util * 100).toFixed(1) + "%", l.accepts_per_s.toFixed(1), l.queued_bytes, l.queue_len] })));
  const st = document.getElementById("status");
  st.textContent = "live · sample " + snap.samples + " · " + new Date(snap.time).toLocaleTimeString();
  st.className = "status ok";
}

async function poll() {
  try {
    const r = await fetch("stats?history=" + HISTORY, { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
  } catch (e) {
    const st = document.getElementById("status");
    st.textContent = "no data: " + e.message;
    st.className = "status bad";
  }
  setTimeout(poll, POLL_MS);
}

poll();
