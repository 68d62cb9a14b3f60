"""The viz page template: one self-contained HTML file (inline CSS and JavaScript, no network).

charrnn.viz fills in ``/*DATA*/`` with the page's JSON (with ``<``, ``>`` and ``&`` escaped, so the
text can never close the script element). The page reads its selection (``#layer=2&unit=37&state=c``
or ``#view=surprisal``) from the URL fragment and writes it back there when the selectors change.
"""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>charrnn viz</title>
<style>
body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#fff}
header{padding:8px 14px 6px;border-bottom:1px solid #ddd;background:#f7f7f7}
h1{font-size:15px;margin:0 0 6px;font-weight:600}
.controls{display:flex;flex-wrap:wrap;gap:12px;align-items:center;font-size:13px}
.controls label{white-space:nowrap}
select,button{font:inherit}
#legend{display:inline-flex;align-items:center;gap:6px;font-size:12px;color:#555}
#bar{display:inline-block;width:150px;height:11px;border:1px solid #bbb}
.small{font-size:12px;color:#555;margin-top:4px}
#notes{color:#8a5a00}
#warn{color:#b00020;font-size:12px}
main{display:flex;gap:16px;padding:10px 14px}
#text{flex:1;min-width:0;font:13px/1.55 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;white-space:pre-wrap;
  word-break:break-all}
#text span{border-radius:2px}
#text span.nl::before{content:"\21B5";color:#aaa}
#text span:hover{outline:1px solid #333}
aside{width:250px;flex:none;font-size:12px}
aside h2{font-size:13px;margin:0 0 4px}
aside ul{list-style:none;padding:0;margin:0 0 8px}
aside li{margin:1px 0;white-space:nowrap}
aside a{color:#1a55c4;text-decoration:none;font-family:ui-monospace,monospace}
aside a.sel{font-weight:bold;background:#e3ecff}
#tip{position:fixed;display:none;background:#fff;border:1px solid #999;box-shadow:0 2px 8px rgba(0,0,0,.2);
  padding:6px 9px;font:12px/1.45 ui-monospace,"DejaVu Sans Mono",monospace;white-space:pre;pointer-events:none;z-index:9}
</style></head><body>
<header>
<h1 id="title">charrnn viz</h1>
<div class="controls">
<label><input type="radio" name="view" value="surprisal" id="v-s"> surprisal</label>
<label><input type="radio" name="view" value="unit" id="v-u"> hidden unit:</label>
<label>layer <select id="layer"></select></label>
<label>state <select id="state"></select></label>
<label>unit <select id="unit"></select></label>
<span><button id="prev" title="previous unit">&#9664;</button><button id="next" title="next unit">&#9654;</button></span>
<span id="legend"><span id="lo"></span><span id="bar"></span><span id="hi"></span></span>
<a id="permalink" href="#" title="the address of this view">link</a>
</div>
<div class="small" id="help"></div>
<div class="small" id="notes"></div>
<div id="warn"></div>
</header>
<main><div id="text"></div>
<aside><h2>Units that track the text</h2>
<div class="small">|Pearson r| over this page; click one to show it.</div>
<div id="corr"></div><div class="small" id="stats"></div></aside></main>
<div id="tip"></div>
<script type="application/json" id="data">/*DATA*/</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const $ = id => document.getElementById(id);
const N = D.segs.length, SMAX = 8, cache = {};
let cur = {view: "surprisal", layer: 1, unit: D.units[0][0], state: "h"};

function acts(layer, st) {  // int8 values of every embedded unit of a layer, unit-major
  const key = layer + st;
  if (!cache[key]) {
    const bin = atob(D.act[layer - 1][st]), q = new Int8Array(bin.length);
    for (let i = 0; i < bin.length; i++) q[i] = (bin.charCodeAt(i) << 24) >> 24;
    cache[key] = q;
  }
  return cache[key];
}
function unitIndex(s) { return D.units[s.layer - 1].indexOf(s.unit); }
function unitValues() {  // {q: int8 values, scale: real value of q=127, norm: value shown at full colour}
  const k = unitIndex(cur), L = cur.layer - 1, st = cur.state;
  return k < 0 ? null : {q: acts(cur.layer, st).subarray(k * N, (k + 1) * N), scale: D.scale[L][st][k],
                         norm: D.norm[L][st][k]};
}
function sCol(bits) {  // surprisal: white (0 bits) -> yellow -> red (SMAX bits or more)
  const t = Math.min(bits / SMAX, 1);
  return `hsl(${Math.round(55 - 55 * t)},100%,${Math.round(100 - 48 * t)}%)`;
}
function aCol(v) {  // activation in [-1, 1]: blue negative, red positive
  return v >= 0 ? `rgba(226,52,38,${v.toFixed(3)})` : `rgba(38,98,226,${(-v).toFixed(3)})`;
}
function show(s) {
  return "'" + s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/\t/g, "\\t").replace(/\r/g, "\\r") + "'";
}
function fragment() {
  return cur.view === "surprisal" ? "view=surprisal" : `layer=${cur.layer}&unit=${cur.unit}&state=${cur.state}`;
}
function select(next) {  // validate a wanted selection; a bad one keeps the current view and says why
  const warn = [];
  if (!(next.layer >= 1 && next.layer <= D.layers)) { warn.push(`layer ${next.layer} is not on this page (layers 1-${D.layers})`); next.layer = cur.layer; }
  if (!D.states.includes(next.state)) { warn.push(`state ${next.state} is not available (${D.states.join(", ")})`); next.state = "h"; }
  if (unitIndex(next) < 0) {
    warn.push(`unit ${next.unit} of layer ${next.layer} is not on this page (units 0-${D.hidden - 1}` +
              (D.units[next.layer - 1].length < D.hidden ? "; only some are embedded, see the note above" : "") + ")");
    next.unit = D.units[next.layer - 1].includes(cur.unit) ? cur.unit : D.units[next.layer - 1][0];
  }
  $("warn").textContent = warn.join("; ");
  cur = next;
}
function readFragment() {
  const p = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (p.get("view") === "surprisal" && !p.has("unit")) { cur = {...cur, view: "surprisal"}; $("warn").textContent = ""; return; }
  if (!p.has("unit") && !p.has("layer") && !p.has("state") && p.get("view") !== "unit") return;
  const num = (k, d) => p.has(k) ? Number(p.get(k)) : d;
  select({view: "unit", layer: num("layer", cur.layer), unit: num("unit", cur.unit), state: p.get("state") || cur.state});
}
function writeFragment() {
  const f = "#" + fragment();
  if (location.hash === f) return;
  try { history.replaceState(null, "", f); } catch (e) { location.hash = f; }
}
function fillSelectors() {
  $("v-s").checked = cur.view === "surprisal";
  $("v-u").checked = cur.view === "unit";
  $("layer").value = String(cur.layer);
  $("state").value = cur.state;
  const us = $("unit");
  if (us.dataset.layer !== String(cur.layer)) {
    us.textContent = "";
    for (const u of D.units[cur.layer - 1]) us.add(new Option(String(u), String(u)));
    us.dataset.layer = String(cur.layer);
  }
  us.value = String(cur.unit);
  for (const a of document.querySelectorAll("#corr a"))
    a.classList.toggle("sel", cur.view === "unit" && a.getAttribute("href") === "#" + fragment());
}
function paint() {
  const spans = $("text").children, vals = cur.view === "unit" ? unitValues() : null;
  for (let i = 0; i < N; i++) {
    let bg = "";
    if (cur.view === "surprisal") { if (D.s[i] !== null) bg = sCol(D.s[i]); }
    else if (vals) bg = aCol(Math.max(-1, Math.min(1, vals.q[i] / 127 * vals.scale / vals.norm)));
    spans[i].style.background = bg;
  }
  if (cur.view === "surprisal") {
    $("lo").textContent = "0 bits"; $("hi").textContent = `${SMAX}+ bits`;
    $("bar").style.background = `linear-gradient(to right,${[0, 2, 4, 6, 8].map(b => sCol(b * SMAX / 8)).join(",")})`;
  } else {
    const c = cur.state === "c";
    const v = unitValues(), n = v && c ? v.norm.toPrecision(2) : "1";
    $("lo").textContent = "-" + n; $("hi").textContent = "+" + n;
    $("bar").style.background = `linear-gradient(to right,${aCol(-1)},#fff,${aCol(1)})`;
  }
  fillSelectors();
  $("permalink").setAttribute("href", "#" + fragment());
  writeFragment();
}
function init() {
  $("title").textContent = "charrnn viz: " + D.title;
  document.title = "charrnn viz: " + D.title;
  $("help").textContent = "Colour: the model's surprisal at each character (-log2 p, bits), or one hidden unit's " +
    "activation (h; for LSTMs also the cell state c, at full colour from its 98th percentile |c| on this " +
    "page). Hover a character for the next-token predictions. Layers count from 1, units from 0; the address " +
    "(#layer=1&unit=3&state=h) keeps the selection.";
  $("notes").textContent = D.notes.join(". ");
  $("stats").textContent = `${D.chars.toLocaleString()} characters, ${D.tokens.toLocaleString()} ${D.tokenizer} ` +
    `tokens; mean ${D.bpc.toFixed(3)} bits/char over the predicted ones.`;
  for (let l = 1; l <= D.layers; l++) $("layer").add(new Option(String(l), String(l)));
  for (const s of D.states) $("state").add(new Option(s, s));
  const frag = document.createDocumentFragment();
  D.segs.forEach((s, i) => {
    const sp = document.createElement("span");
    sp.textContent = s; sp.dataset.i = i;
    if (s === "\n") sp.className = "nl";
    frag.appendChild(sp);
  });
  $("text").appendChild(frag);
  const byFeature = {};
  for (const c of D.corr) (byFeature[c.feature] = byFeature[c.feature] || []).push(c);
  for (const [f, list] of Object.entries(byFeature)) {
    const h = document.createElement("div"); h.textContent = f; h.style.fontWeight = "600";
    const ul = document.createElement("ul");
    for (const c of list) {
      const li = document.createElement("li"), a = document.createElement("a");
      a.href = `#layer=${c.layer}&unit=${c.unit}&state=${c.state}`;
      a.textContent = `layer ${c.layer} ${c.state}[${c.unit}]`;
      li.append(a, `  r = ${c.r >= 0 ? "+" : ""}${c.r.toFixed(2)}`);
      ul.appendChild(li);
    }
    $("corr").append(h, ul);
  }
  if (D.initial.view === "unit") select({view: "unit", layer: D.initial.layer, unit: D.initial.unit, state: D.initial.state});
  readFragment();
  paint();
}
function tip(e) {
  const t = e.target, tp = $("tip");
  if (t.parentNode !== $("text")) { tp.style.display = "none"; return; }
  const i = Number(t.dataset.i), s = D.s[i], lines = [show(D.segs[i])];
  lines.push(s === null ? "first token: nothing predicts it" : `surprisal ${s.toFixed(2)} bits  (p = ${Math.pow(2, -s).toPrecision(3)})`);
  if (cur.view === "unit") {
    const v = unitValues();
    if (v) lines.push(`layer ${cur.layer} ${cur.state}[${cur.unit}] = ${(v.q[i] / 127 * v.scale).toFixed(3)}`);
  }
  lines.push("next:");
  for (let j = 0; j < D.k; j++) {
    const id = D.ti[i * D.k + j];
    lines.push(`  ${show(D.vocab[id]).padEnd(8)} ${(100 * D.tp[i * D.k + j]).toFixed(1).padStart(5)}%`);
  }
  tp.textContent = lines.join("\n");
  tp.style.display = "block";
  const w = tp.offsetWidth, h = tp.offsetHeight;
  tp.style.left = Math.max(4, Math.min(e.clientX + 14, innerWidth - w - 6)) + "px";
  tp.style.top = (e.clientY + 18 + h < innerHeight ? e.clientY + 18 : e.clientY - h - 10) + "px";
}
$("text").addEventListener("mousemove", tip);
$("text").addEventListener("mouseleave", () => { $("tip").style.display = "none"; });
for (const r of document.querySelectorAll("input[name=view]"))
  r.addEventListener("change", () => { cur = {...cur, view: r.value}; $("warn").textContent = ""; paint(); });
const pick = ch => { select({...cur, view: "unit", ...ch}); paint(); };
$("layer").addEventListener("change", e => { const l = Number(e.target.value), us = D.units[l - 1];
  pick({layer: l, unit: us.includes(cur.unit) ? cur.unit : us[0]}); });
$("state").addEventListener("change", e => pick({state: e.target.value}));
$("unit").addEventListener("change", e => pick({unit: Number(e.target.value)}));
const step = d => { const us = D.units[cur.layer - 1], k = Math.max(0, us.indexOf(cur.unit));
  pick({unit: us[(k + d + us.length) % us.length]}); };
$("prev").addEventListener("click", () => step(-1));
$("next").addEventListener("click", () => step(1));
addEventListener("hashchange", () => { readFragment(); paint(); });
init();
</script></body></html>
"""
