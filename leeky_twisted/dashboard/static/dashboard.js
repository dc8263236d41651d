// Leeky Raft dashboard: one page, no dependencies. Data comes from the node that served it:
// GET /dashboard/cluster once, then server-sent events on /dashboard/events.
"use strict";
const $ = (s) => document.querySelector(s);
const WINDOW = 300; // seconds shown by the charts
const series = {}; // member -> [{t, commits, p50, p99, write, read, refused, error}], oldest first
let view = null;
let paused = false;
const seenPoints = {}; // member -> t of the last history point already used

function el(tag, attrs, text) {
  const e = document.createElementNS(tag === "svg" || attrs.svg ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
  for (const [k, v] of Object.entries(attrs)) if (k !== "svg") e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < 3) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function clock(t) { return new Date(t * 1000).toLocaleTimeString(); }

// ------------------------------------------------------------------ the cluster
function leaderOf(v) {
  let best = null;
  for (const [id, m] of Object.entries(v.members)) {
    const st = m.reachable && m.state && m.state.status;
    if (st && st.role === "leader" && (!best || st.term > best.term)) best = {id, term: st.term};
  }
  return best;
}
function addPoint(p, who) {
  const q = {t: p.t, commits: p.commits, p50: p.p50_ms, p99: p.p99_ms, write: 0, read: 0, refused: 0, error: 0};
  for (const [k, r] of Object.entries(p.requests || {})) {
    const [kind, outcome] = k.split(":");
    if (outcome === "ok") q[kind === "write" ? "write" : "read"] += r;
    else q[outcome] += r;
  }
  const list = series[who] || (series[who] = []);
  if (!list.length || list[list.length - 1].t < q.t) list.push(q);
  while (list.length && list[0].t < q.t - WINDOW) list.shift();
  if (!paused && p.sent) spawnDots(who, p.sent);
}
// The charts: the leader's own points (commits, latency, requests it served), plus the
// requests the other members forwarded, summed into the leader's seconds.
function chartData() {
  const lead = view && (leaderOf(view) || {id: view.self}).id;
  const base = series[lead] || [];
  const forwarded = new Map();
  for (const [who, list] of Object.entries(series)) {
    if (who === lead) continue;
    for (const q of list) {
      const s = Math.floor(q.t);
      forwarded.set(s, (forwarded.get(s) || 0) + q.refused + q.error);
    }
  }
  return base.map((q) => Object.assign({}, q, {forwarded: q.refused + (forwarded.get(Math.floor(q.t)) || 0)}));
}
function update(v) {
  view = v;
  const lead = leaderOf(v);
  const me = v.members[v.self].state.status;
  $("#self").textContent = v.self;
  $("#leader").textContent = lead ? lead.id : "none";
  $("#leader").dataset.term = lead ? lead.term : 0;
  $("#term").textContent = lead ? lead.term : me.term;
  $("#commit").textContent = me.commit_index;
  for (const [id, m] of Object.entries(v.members)) {
    const p = m.reachable && m.state && m.state.last_point;
    if (p && p.t !== seenPoints[id]) { seenPoints[id] = p.t; addPoint(p, id); }
  }
  renderMembers(v, lead);
  renderTimeline(v.timeline);
  drawCharts();
  renderRing(v, lead);
}
function renderMembers(v, lead) {
  const body = $("#members tbody");
  const leadState = lead && v.members[lead.id].state;
  const follow = (leadState && leadState.followers) || {};
  const gossip = {};
  for (const g of v.members[v.self].state.members || []) gossip[g.id] = g.gossip;
  let maxLast = 0;
  for (const m of Object.values(v.members)) if (m.state) maxLast = Math.max(maxLast, m.state.status.last_index || 0);
  body.replaceChildren();
  for (const id of Object.keys(v.members).sort()) {
    const m = v.members[id];
    const st = (m.state && m.state.status) || {};
    const f = follow[id];
    const role = m.reachable ? st.role || "?" : "down";
    const tr = el("tr", {"data-member": id, "data-role": role, class: m.reachable ? "" : "down"});
    const lag = lead && id === lead.id ? 0 : f ? f.lag : m.state ? maxLast - (st.last_index || 0) : null;
    const cells = [
      [id], [role, "role"], [st.term], [st.last_index], [st.commit_index], [st.applied_index],
      [st.snapshot_index], [lag, "lag"],
      [f ? `${f.match} / ${f.inflight}${f.state !== "replicate" ? " (" + f.state + ")" : ""}` : "–"],
      [f && f.last_contact !== null ? f.last_contact.toFixed(1) + " s" : "–"],
      [gossip[id] || "–"], [bytes(m.state && m.state.data_bytes)],
      [m.reachable ? "yes" : "no" + (m.down_since ? " since " + clock(m.down_since) : "") + (m.error ? ": " + m.error : "")],
    ];
    for (const [value, cls] of cells) {
      const td = el("td", cls ? {class: cls} : {});
      if (cls === "role") td.append(el("span", {class: "badge " + role}, role));
      else td.textContent = value === undefined || value === null ? "–" : value;
      tr.append(td);
    }
    const act = el("td", {class: "admin"});
    if (v.admin && lead && lead.id === v.self && id !== v.self) {
      if (m.reachable && (st.voters || []).includes(id)) act.append(button("make leader", "transfer?to=" + encodeURIComponent(id)));
      if (!m.reachable) act.append(button("remove", "remove?id=" + encodeURIComponent(id)));
    }
    tr.append(act);
    body.append(tr);
  }
  const note = $("#admin-note");
  if (!v.admin) note.textContent = "Read-only: operator actions are off on this node.";
  else if (!lead || lead.id !== v.self) {
    const a = lead && v.members[lead.id].address;
    note.textContent = "Operator actions run on the leader" + (a ? ": open http://" + a + "/" : ".");
  } else note.textContent = "Operator actions are on (they ask for the admin token).";
}
function button(label, action) {
  const b = el("button", {}, label);
  b.onclick = async () => {
    let token = sessionStorage.getItem("leeky-admin");
    if (!token) token = prompt("Admin token (from --dashboard-admin-token-file)");
    if (!token) return;
    const r = await fetch("/dashboard/admin/" + action, {method: "POST", headers: {Authorization: "Bearer " + token}});
    const body = await r.json().catch(() => ({error: "HTTP " + r.status}));
    if (r.ok) sessionStorage.setItem("leeky-admin", token); else sessionStorage.removeItem("leeky-admin");
    $("#admin-note").textContent = body.ok || body.error;
  };
  return b;
}
function renderTimeline(events) {
  const ol = $("#timeline");
  ol.replaceChildren();
  for (const e of events.slice().reverse()) {
    const li = el("li", {"data-kind": e.kind, "data-term": e.term});
    li.append(el("time", {}, clock(e.t)), document.createTextNode(e.text));
    ol.append(li);
  }
}

// ------------------------------------------------------------------ charts
function drawChart(id, lines, data) {
  const c = $(id), g = c.getContext("2d"), r = devicePixelRatio;
  c.width = c.clientWidth * r; c.height = 150 * r;
  g.scale(r, r);
  const W = c.width / r, H = 150, L = 40, B = 16;
  const now = view ? view.now : Date.now() / 1000;
  let max = 1;
  for (const [, get] of lines) for (const q of data) { const y = get(q); if (y > max) max = y; }
  max = niceMax(max);
  g.font = "10px system-ui"; g.fillStyle = "#6b7480"; g.strokeStyle = "#dde1e6";
  for (let i = 0; i <= 2; i++) {
    const y = 4 + (H - B - 4) * i / 2;
    g.beginPath(); g.moveTo(L, y); g.lineTo(W, y); g.stroke();
    g.fillText(fmt(max * (1 - i / 2)), 2, y + 3);
  }
  // the window grows with the data: one minute at first, up to WINDOW seconds
  const span = Math.min(WINDOW, Math.max(60, data.length ? now - data[0].t : 0));
  g.fillText(span >= 120 ? "−" + Math.round(span / 60) + " min" : "−" + Math.round(span) + " s", L, H - 3);
  g.fillText("now", W - 22, H - 3);
  const x = (t) => L + (W - L) * (1 - (now - t) / span);
  const yOf = (v) => 4 + (H - B - 4) * (1 - v / max);
  for (const [color, get] of lines) {
    g.strokeStyle = g.fillStyle = color; g.lineWidth = 1.5; g.beginPath();
    let on = false;
    for (const q of data) {
      const v = get(q);
      if (v === null || v === undefined) { on = false; continue; }
      if (on) g.lineTo(x(q.t), yOf(v)); else g.moveTo(x(q.t), yOf(v));
      on = true;
    }
    g.stroke();
    for (const q of data) { const v = get(q); if (v !== null && v !== undefined) g.fillRect(x(q.t) - 1, yOf(v) - 1, 2, 2); }
  }
}
function niceMax(v) { const p = Math.pow(10, Math.floor(Math.log10(v))); return Math.ceil(v / p) * p; }
function fmt(v) { return v >= 100 ? Math.round(v) : +v.toFixed(1); }
function drawCharts() {
  if ($("#view-cluster").hidden) return;
  const data = chartData();
  drawChart("#chart-commits", [["#1c7ed6", (q) => q.commits]], data);
  drawChart("#chart-latency", [["#1c7ed6", (q) => q.p50], ["#e03131", (q) => q.p99]], data);
  drawChart("#chart-requests", [["#1c7ed6", (q) => q.write], ["#2b8a3e", (q) => q.read],
    ["#f08c00", (q) => q.forwarded], ["#e03131", (q) => q.error]], data);
}

// ------------------------------------------------------------------ the ring
const COLORS = {append: "#1c7ed6", heartbeat: "#adb5bd", vote: "#ae3ec9", prevote: "#e599f7",
  snapshot: "#f08c00", timeout_now: "#e03131", read_index: "#2b8a3e", other: "#495057"};
const ROLE = {leader: "#d9480f", follower: "#1c7ed6", candidate: "#ae3ec9", learner: "#2b8a3e", down: "#868e96"};
let pos = {};
let dots = [];
function renderRing(v, lead) {
  const svg = $("#ring"), ids = Object.keys(v.members).sort(), R = 140;
  pos = {};
  ids.forEach((id, i) => {
    const a = -Math.PI / 2 + 2 * Math.PI * i / ids.length;
    pos[id] = [R * Math.cos(a), R * Math.sin(a)];
  });
  svg.replaceChildren();
  for (let i = 0; i < ids.length; i++) for (let j = i + 1; j < ids.length; j++) {
    const [a, b] = [pos[ids[i]], pos[ids[j]]];
    svg.append(el("line", {svg: 1, class: "edge", x1: a[0], y1: a[1], x2: b[0], y2: b[1]}));
  }
  svg.append(el("g", {svg: 1, id: "dots"}));
  // messages per second on each edge, both ways, from the senders' last samples
  const rate = (from, to) => {
    const p = v.members[from].reachable && v.members[from].state && v.members[from].state.last_point;
    return p && p.sent && p.sent[to] ? Object.values(p.sent[to]).reduce((a, b) => a + b, 0) : 0;
  };
  for (let i = 0; i < ids.length; i++) for (let j = i + 1; j < ids.length; j++) {
    const n = rate(ids[i], ids[j]) + rate(ids[j], ids[i]);
    if (!n) continue;
    const [a, b] = [pos[ids[i]], pos[ids[j]]];
    svg.append(el("text", {svg: 1, class: "rate", x: (a[0] + b[0]) / 2, y: (a[1] + b[1]) / 2 - 6}, n + " msg/s"));
  }
  for (const id of ids) {
    const m = v.members[id], st = (m.state && m.state.status) || {};
    const role = m.reachable ? st.role : "down";
    const g = el("g", {svg: 1, class: "node", "data-member": id, "data-role": role,
      transform: `translate(${pos[id][0]},${pos[id][1]})`});
    g.append(el("circle", {svg: 1, r: lead && lead.id === id ? 30 : 24, fill: ROLE[role] || "#495057"}));
    g.append(el("text", {svg: 1}, id));
    const below = m.reachable ? `${role} · term ${st.term} · commit ${st.commit_index}` : "down";
    g.append(el("text", {svg: 1, class: "sub", y: 44}, below));
    svg.append(g);
  }
}
function spawnDots(from, sent) {
  const now = performance.now();
  for (const [to, kinds] of Object.entries(sent)) {
    if (!pos[from] || !pos[to]) continue;
    for (const [kind, n] of Object.entries(kinds)) {
      const shown = Math.min(n, 4); // sampled: at most 4 dots per kind, pair and second
      for (let i = 0; i < shown; i++) {
        dots.push({from, to, kind: kind.replace("_reply", ""), reply: kind.endsWith("_reply"),
          start: now + (1000 * i) / shown + Math.random() * 150, dur: 700});
      }
    }
  }
  if (dots.length > 600) dots = dots.slice(-600);
}
function animate() {
  const layer = $("#dots");
  if (!paused && layer && !$("#view-ring").hidden) {
    const now = performance.now();
    dots = dots.filter((d) => now < d.start + d.dur);
    layer.replaceChildren();
    for (const d of dots) {
      const f = (now - d.start) / d.dur;
      if (f < 0 || !pos[d.from] || !pos[d.to]) continue;
      const [a, b] = [pos[d.from], pos[d.to]];
      layer.append(el("circle", {svg: 1, r: d.reply ? 3 : 5, fill: COLORS[d.kind] || COLORS.other,
        "data-kind": d.kind, cx: a[0] + (b[0] - a[0]) * f, cy: a[1] + (b[1] - a[1]) * f}));
    }
  }
  requestAnimationFrame(animate);
}

// ------------------------------------------------------------------ wiring
function show(name) {
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("on", b.dataset.view === name);
  $("#view-cluster").hidden = name !== "cluster";
  $("#view-ring").hidden = name !== "ring";
  if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
  drawCharts();
}
for (const b of document.querySelectorAll("nav button")) b.onclick = () => show(b.dataset.view);
$("#pause").onclick = () => {
  paused = !paused;
  $("#pause").textContent = paused ? "Resume" : "Pause";
  $("#pause").dataset.paused = paused;
};
show(location.hash === "#ring" ? "ring" : "cluster");
fetch("/dashboard/cluster").then((r) => r.json()).then((v) => {
  for (const p of v.history || []) addPoint(Object.assign({}, p, {sent: null}), v.self);
  update(v);
}).catch(() => {});
const events = new EventSource("/dashboard/events");
events.addEventListener("cluster", (e) => {
  $("#live").textContent = "live"; $("#live").className = "";
  update(JSON.parse(e.data));
});
events.onerror = () => { $("#live").textContent = "reconnecting"; $("#live").className = "off"; };
requestAnimationFrame(animate);
