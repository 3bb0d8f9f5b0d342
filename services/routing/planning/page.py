"""`GET /planning`: the staffing curve of a day against the agents actually available, as one self-contained page.

No data and no key are in the page or its URL: it asks for the API key, keeps it in memory only, and
sends it as the `Authorization` header of its own request to `/v1/planning/staffing`, then draws the
answer as inline SVG (no external scripts, styles or fonts).
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Switchboard planning: staffing</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px system-ui, sans-serif; margin: 1.5rem; color: #1d2330; }
  form { display: flex; flex-wrap: wrap; gap: .75rem; align-items: end; margin-bottom: 1rem; }
  label { display: flex; flex-direction: column; gap: .2rem; font-size: 12px; color: #4a5366; }
  input, select { padding: .3rem .4rem; font: inherit; }
  button { padding: .4rem .9rem; font: inherit; cursor: pointer; }
  #status { margin: .5rem 0; color: #4a5366; }
  #status.error { color: #b00020; }
  .needed { stroke: #1f6feb; fill: none; stroke-width: 2; }
  .available { fill: #2da44e; opacity: .35; }
  .axis { stroke: #8c95a6; stroke-width: 1; }
  svg text { font-size: 10px; fill: #4a5366; }
  table { border-collapse: collapse; margin-top: 1rem; }
  td, th { border-bottom: 1px solid #e1e4ea; padding: .15rem .6rem; text-align: right; }
</style>
</head>
<body>
<h1>Staffing: agents needed against agents available</h1>
<form id="query">
  <label>API key <input id="key" type="password" autocomplete="off" required></label>
  <label>Day (UTC) <input id="date" type="date" required></label>
  <label>Target (s) <input id="target" type="number" min="1" value="20"></label>
  <label>Service level <input id="level" type="number" min="0.01" max="0.99" step="0.01" value="0.8"></label>
  <label>Shrinkage <input id="shrinkage" type="number" min="0" max="0.9" step="0.01" value="0"></label>
  <label>Handle time (s, optional) <input id="aht" type="number" min="1"></label>
  <label>Arrivals <select id="basis"><option value="forecast">forecast</option>
    <option value="recorded">recorded that day</option></select></label>
  <button type="submit">Show</button>
</form>
<div id="status" role="status">Give the API key and a day.</div>
<div id="chart"></div>
<table id="table" hidden><thead><tr><th>Interval</th><th>Arrivals</th><th>Needed</th>
<th>With shrinkage</th><th>Available</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
$("date").value = new Date().toISOString().slice(0, 10);
const SVG = "http://www.w3.org/2000/svg";
function node(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}
function draw(rows) {
  const width = 960, height = 320, left = 40, bottom = 30, top = 10;
  const top_value = Math.max(1, ...rows.map((r) => Math.max(r.agents_with_shrinkage, r.agents_available || 0)));
  const x = (i) => left + (i * (width - left - 10)) / rows.length;
  const y = (v) => height - bottom - (v * (height - bottom - top)) / top_value;
  const svg = node("svg", {width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                           "aria-label": "agents needed (line) and available (bars) per interval"});
  svg.append(node("line", {class: "axis", x1: left, y1: y(0), x2: width - 10, y2: y(0)}));
  svg.append(node("line", {class: "axis", x1: left, y1: top, x2: left, y2: y(0)}));
  for (const tick of [0, Math.round(top_value / 2), top_value]) {
    svg.append(node("text", {x: 4, y: y(tick) + 3}, String(tick)));
  }
  const band = (width - left - 10) / rows.length;
  rows.forEach((row, i) => {
    if (row.agents_available !== null) {
      svg.append(node("rect", {class: "available", "data-available": row.agents_available, x: x(i), y: y(row.agents_available),
                               width: Math.max(band - 1, 1), height: y(0) - y(row.agents_available)}));
    }
    if (i % Math.max(1, Math.round(rows.length / 12)) === 0) {
      svg.append(node("text", {x: x(i), y: height - 12}, row.start.slice(11, 16)));
    }
  });
  const points = rows.map((row, i) => `${x(i) + band / 2},${y(row.agents_with_shrinkage)}`).join(" ");
  svg.append(node("polyline", {class: "needed", points}));
  $("chart").replaceChildren(svg);
  const body = $("table").querySelector("tbody");
  body.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    for (const value of [row.start.slice(11, 16), row.arrivals, row.agents, row.agents_with_shrinkage,
                         row.agents_available === null ? "–" : row.agents_available]) {
      const td = document.createElement("td");
      td.textContent = String(value);
      tr.append(td);
    }
    return tr;
  }));
  $("table").hidden = false;
}
$("query").addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = $("status");
  status.className = "";
  status.textContent = "Loading…";
  const query = new URLSearchParams({date: $("date").value, target_seconds: $("target").value,
                                     service_level: $("level").value, shrinkage: $("shrinkage").value,
                                     arrivals_from: $("basis").value});
  if ($("aht").value) query.set("aht_seconds", $("aht").value);
  try {
    const response = await fetch(`/v1/planning/staffing?${query}`,
                                 {headers: {Authorization: `Bearer ${$("key").value}`}});
    const body = await response.json();
    if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
    draw(body.intervals);
    const peak = Math.max(...body.intervals.map((r) => r.agents_with_shrinkage));
    status.textContent = `${body.date}: peak ${peak} agents needed; handle time ${body.aht_seconds} s; ` +
      (body.backtest ? `forecast MAPE ${body.backtest.mape_percent !== null ? body.backtest.mape_percent + "%" : "n/a"}`
                     : body.method);
  } catch (error) {
    status.className = "error";
    status.textContent = `Could not load the staffing: ${error.message}`;
  }
});
</script>
</body>
</html>
"""
