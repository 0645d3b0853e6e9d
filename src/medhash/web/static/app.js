// medhash search page: plain JavaScript over the REST API (/api/*); nothing is loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { archive: null, indexes: [], settings: loadSettings(), lastResult: null, lastSearch: null, patients: [],
                patientSlices: [], similar: null, similarTicket: 0, listHash: "#search", planned: { pid: null, ticket: 0 } };

function loadSettings() {
  let s = {};
  try { s = JSON.parse(localStorage.getItem("medhash.settings") || "{}"); } catch (e) { s = {}; }
  return { index: s.index || "", k: s.k || 10, same: s.same || "", rerank: s.rerank || 0,
           isodose: s.isodose || "", token: sessionStorage.getItem("medhash.token") || "" };
}

function saveSettings() {
  const s = state.settings;
  localStorage.setItem("medhash.settings", JSON.stringify({ index: s.index, k: s.k, same: s.same, rerank: s.rerank,
                                                             isodose: s.isodose }));
  sessionStorage.setItem("medhash.token", s.token);
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function headers() {
  return state.settings.token ? { Authorization: "Bearer " + state.settings.token } : {};
}

// where the page sets each request field an error can name (the API's "field"), said after its message
const FIELD_HINTS = { index: "choose the index in Settings", k: "change k in Settings", rerank: "change re-rank in Settings",
                      same_patient: "change same patient in Settings", dose: "choose a dose file in the upload form",
                      isodose: "change the isodose lines in Settings" };

// fetch JSON from the API; errors carry the server's {"detail": ...} and, when one request field is
// at fault, where the page sets it (the API's "field")
async function api(path, options = {}) {
  const resp = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) {
    let detail = body && body.detail !== undefined ? body.detail : resp.statusText;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    const hint = body && FIELD_HINTS[body.field];
    const err = new Error(`${resp.status}: ${detail}` + (hint ? ` — ${hint}` : ""));
    err.field = body ? body.field : undefined;
    throw err;
  }
  return body;
}

// an <img> from the API: a plain URL, or (with a token) fetched with the header into a blob URL
async function setImage(img, url) {
  img.dataset.src = url;
  if (!state.settings.token) { img.src = url; return; }
  const resp = await fetch(url, { headers: headers() });
  if (!resp.ok) throw new Error(`${resp.status}: picture ${url}`);
  const blob = await resp.blob();
  if (img.dataset.src === url) img.src = URL.createObjectURL(blob);
}

function sliceUrl(pid, idx, params = {}) {
  const q = new URLSearchParams(params).toString();
  return `/api/slices/${encodeURIComponent(pid)}/${idx}.png` + (q ? "?" + q : "");
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function legend(box) {
  box.replaceChildren(el("span", { text: "isodose lines:" }));
  for (const lv of (state.archive ? state.archive.isodose : [])) {
    const sw = el("span", { class: "swatch" });
    sw.style.background = lv.colour;
    box.append(el("span", {}, sw, `${lv.gy} Gy`));
  }
}

// ------------------------------------------------------------------ views
function route() {
  const hash = location.hash.replace(/^#/, "") || "search";
  const parts = hash.split("/");
  const view = parts[0] === "slice" ? "detail" : parts[0];
  for (const v of ["search", "detail", "similar", "archive", "settings"]) $("view-" + v).hidden = v !== view;
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  if (view === "search" || view === "similar") state.listHash = location.hash || "#search";  // where "back" leads
  if (view === "detail" && parts.length >= 3) showDetail(decodeURIComponent(parts[1]), parseInt(parts[2], 10));
  if (view === "similar") showSimilar(decodeURIComponent(parts[1] || ""));
  if (view === "archive") showArchive().catch((e) => showError(e.message));
  if (view === "settings") showSettings();
}

function settingsSummary() {
  const s = state.settings;
  const same = s.same === "" ? "own patient left out" : (s.same === "true" ? "own patient included" : "own patient excluded");
  $("settings-summary").textContent = `index ${indexLabel()} · k ${s.k} · ${same}` +
    (Number(s.rerank) > 0 ? ` · re-ranked from the Hamming top ${s.rerank}` : "") +
    (s.isodose ? ` · isodose lines ${s.isodose}` : "") + " · change in Settings";
}

// ------------------------------------------------------------------ indexes
// the index a search uses: the one chosen in Settings, else the archive's only one (null: none or several)
function chosenIndex() {
  const s = state.settings.index;
  if (s) return state.indexes.find((ix) => ix.name === s) || { name: s, channel: "" };
  return state.indexes.length === 1 ? state.indexes[0] : null;
}

function indexLabel() {
  if (state.settings.index) return state.settings.index;
  if (state.indexes.length === 1) return `${state.indexes[0].name} (the only one)`;
  return state.indexes.length ? "not chosen: choose one in Settings" : "none: build one first";
}

function describeIndex(ix) {
  return `${ix.name} — ${ix.channel}, ${ix.n_bits} bits, ${ix.hasher}`;
}

// the dose field's label: required by an index with a dose channel, not used by a geometry index
function updateDoseField() {
  const ix = chosenIndex();
  const need = $("dose-need");
  const label = $("dose-label");
  const channel = ix ? ix.channel : "";
  const required = channel.split("+").includes("dose");
  const unused = channel !== "" && !required && channel.includes("geometry");
  need.textContent = ix === null ? "(needed by an index with dose; choose the index in Settings)"
    : required ? `(required: index ${ix.name} searches ${channel})`
    : unused ? `(not used: index ${ix.name} searches ${channel})` : "(optional)";
  need.classList.toggle("required", required);
  label.classList.toggle("unused", unused);
  $("dose").disabled = unused;
  if (required) $("dose").setAttribute("aria-required", "true"); else $("dose").removeAttribute("aria-required");
  return { required, unused };
}

function searchFields() {
  const s = state.settings;
  const f = { k: String(s.k), rerank: String(s.rerank || 0), query_image: "true" };
  if (s.index) f.index = s.index;
  if (s.same !== "") f.same_patient = s.same;
  return f;
}

// an error replaces the results: none of an earlier search stay below it
function clearResults() {
  state.lastResult = null;
  $("results").hidden = true;
  $("result-grid").replaceChildren();
  $("results-meta").textContent = "";
  recognisedNotice($("recognised"), {}, null);
  showVerdict($("verdict"), $("result-grid"), null);
}

function searchError(message) {
  clearResults();
  showError(message);
}

async function runSearch(request) {
  showError("");
  const buttons = [$("upload-search"), $("slice-search")];
  buttons.forEach((b) => (b.disabled = true));
  try {
    const res = await api("/api/search", request);
    state.lastResult = res;
    await showResults(res);
  } catch (e) {
    searchError(e.message);
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

// search with the uploaded file; `overrides`: request fields that replace the settings' (same_patient)
function searchUpload(ev, overrides = {}) {
  if (ev) ev.preventDefault();
  const file = $("file").files[0];
  if (!file) { searchError("choose a CT slice file first"); return; }
  const dose = updateDoseField();
  if (dose.required && !$("dose").files[0]) {
    searchError(`index ${chosenIndex().name} searches CT and dose: choose the query's dose file too`);
    return;
  }
  const form = new FormData();
  form.append("file", file);
  if ($("dose").files[0] && !dose.unused) form.append("dose", $("dose").files[0]);
  for (const [k, v] of Object.entries({ ...searchFields(), ...overrides })) form.append(k, v);
  state.lastSearch = (more) => searchUpload(null, { ...overrides, ...more });
  runSearch({ method: "POST", body: form });
}

function searchSlice(pid, idx, overrides = {}) {
  const body = { patient_id: pid, slice_index: idx, ...searchFields(), ...overrides };
  state.lastSearch = (more) => searchSlice(pid, idx, { ...overrides, ...more });
  body.k = Number(body.k); body.rerank = Number(body.rerank); body.query_image = false;
  if (body.same_patient !== undefined) body.same_patient = body.same_patient === "true";
  location.hash = "#search";
  runSearch({ method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
}

function resultCaption(r) {
  return [el("b", { text: `#${r.rank} ${r.patient_id}:${r.slice_index}` }), el("br"), `z ${r.z_mm.toFixed(1)} mm · `,
    ...distanceParts(r)];
}

// the isodose levels of a result page (Settings' "Isodose lines"), percent relative to the query's maximum dose
async function resultDrawing(res) {
  const q = res.query;
  let top = q.dose_max_gy === undefined ? null : q.dose_max_gy;
  if (top === null && q.type === "archive" && state.settings.isodose) {
    try { top = (await api(`/api/slices/${encodeURIComponent(q.patient_id)}/${q.slice_index}`)).dose_max_gy; } catch (e) { top = null; }
  }
  try { return await isodoseDrawing(state.settings.isodose, top); } catch (e) {
    showError(e.message);
    return isodoseDrawing("", null);
  }
}

async function showResults(res) {
  const q = res.query;
  $("results").hidden = false;
  $("results-meta").textContent = `index ${res.index} (${res.channel}, ${res.n_bits} bits) · top ${res.k}` +
    (res.rerank ? ` re-ranked from ${res.rerank}` : "") + (res.same_patient ? "" : " · other patients only") +
    ` · ${(res.timing_ms.encode + res.timing_ms.search).toFixed(1)} ms`;
  const drawing = await resultDrawing(res);
  isodoseLegend($("legend"), drawing);
  const grid = $("result-grid");
  grid.replaceChildren();
  const again = state.lastSearch;
  recognisedNotice($("recognised"), res, again ? (include) => again({ same_patient: include ? "true" : "false" }) : null);
  showVerdict($("verdict"), grid, res.calibration);
  const qimg = el("img", { alt: "query", class: "query-image" });
  const qlabel = q.type === "archive" ? `${q.patient_id}:${q.slice_index}` : q.file;
  const qcap = [el("b", { text: "query " + qlabel })];
  if (q.z_mm !== undefined) qcap.push(el("br"), `z ${Number(q.z_mm).toFixed(1)} mm`);
  grid.append(el("figure", { class: "result query" }, qimg, el("figcaption", {}, ...qcap)));
  const loads = [];
  if (res.query_image) qimg.src = res.query_image;
  else if (q.type === "archive") loads.push(setImage(qimg, sliceUrl(q.patient_id, q.slice_index, drawing.params)));
  for (const r of res.results) {
    const img = el("img", { alt: `result ${r.rank}: ${r.patient_id}:${r.slice_index}`, class: "result-image" });
    const fig = el("figure", { class: "result", "data-patient": r.patient_id, "data-slice": String(r.slice_index),
                               title: "open the detail view" }, img, el("figcaption", {}, ...resultCaption(r)));
    fig.addEventListener("click", () => { location.hash = `#slice/${encodeURIComponent(r.patient_id)}/${r.slice_index}`; });
    grid.append(fig);
    loads.push(setImage(img, sliceUrl(r.patient_id, r.slice_index, drawing.params)));
  }
  await Promise.all(loads);
}

// ------------------------------------------------------------------ archive slider
// the patient's slices under the slider, at slice_index `at` (default: the middle slice)
async function loadPatient(pid, at) {
  state.patientSlices = [];      // until the new patient's slices come, the slider names no slice
  const p = await api(`/api/patients/${encodeURIComponent(pid)}`);
  state.patientSlices = p.slices;
  const slider = $("slider");
  const pos = p.slices.findIndex((s) => s.slice_index === at);
  slider.max = String(Math.max(0, p.slices.length - 1));
  slider.value = String(pos >= 0 ? pos : Math.floor(p.slices.length / 2));
  updatePreview();
}

// open an archive patient in the search view's patient browser (select + slider), at slice `at`
async function browsePatient(pid, at) {
  showError("");
  location.hash = "#search";
  $("patient").value = pid;
  try { await loadPatient(pid, at); } catch (e) { showError(e.message); return; }
  $("browse").scrollIntoView({ block: "nearest" });
  $("browse").classList.remove("flash");
  void $("browse").offsetWidth;   // restart the highlight
  $("browse").classList.add("flash");
}

function currentSlice() {
  const s = state.patientSlices[Number($("slider").value)];
  return s ? { pid: $("patient").value, idx: s.slice_index, z: s.z_mm } : null;
}

function updatePreview() {
  const c = currentSlice();
  if (!c) return;
  $("slider-label").textContent = `${c.idx} (z ${c.z.toFixed(1)} mm)`;
  setImage($("preview"), sliceUrl(c.pid, c.idx, { size: 160 })).catch((e) => showError(e.message));
}

// ------------------------------------------------------------------ detail view
async function showDetail(pid, idx) {
  showError("");
  $("detail-title").textContent = `${pid}:${idx}`;
  let meta;
  try { meta = await api(`/api/slices/${encodeURIComponent(pid)}/${idx}`); } catch (e) { showError(e.message); return; }
  const drawn = () => {
    const w = state.archive.windows[$("detail-window").value];
    return { size: 512, dose: $("detail-dose").checked ? "true" : "false", level: w.level, width: w.width,
             crop: $("detail-full").checked ? "full" : "body" };
  };
  const redraw = () => setImage($("detail-image"), sliceUrl(pid, idx, drawn())).catch((e) => showError(e.message));
  $("detail-dose").onchange = redraw;
  $("detail-window").onchange = redraw;
  $("detail-full").onchange = redraw;
  redraw();
  legend($("detail-legend"));
  const rows = [["patient", meta.patient_id], ["slice_index", meta.slice_index], ["z", `${meta.z_mm.toFixed(1)} mm`],
    ["dose", meta.has_dose ? `max ${meta.dose_max_gy} Gy` : "none"], ["structures", meta.structures.join(", ") || "none"],
    ["series UID", meta.series_uid]];
  const hit = state.lastResult && state.lastResult.results.find((r) => r.patient_id === pid && r.slice_index === idx);
  if (hit) rows.splice(3, 0, ["rank", `#${hit.rank} of ${state.lastResult.k}`], ["Hamming distance", hit.hamming],
    ...(hit.percentile !== undefined ? [["percentile (random pairs)", Number(hit.percentile).toFixed(2)]] : []),
    ...(hit.expected_hamming !== undefined ? [["expected Hamming", hit.expected_hamming]] : []),
    ...(hit.euclidean !== undefined ? [["Euclidean distance", hit.euclidean]] : []));
  $("detail-meta").replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: String(v) }))));
  const strip = $("neighbours");
  strip.replaceChildren();
  for (const n of [...meta.neighbours.previous, idx, ...meta.neighbours.next]) {
    const img = el("img", { alt: `${pid}:${n}` });
    const fig = el("figure", { class: n === idx ? "current" : "" }, img, el("figcaption", { text: String(n) }));
    fig.addEventListener("click", () => { location.hash = `#slice/${encodeURIComponent(pid)}/${n}`; });
    strip.append(fig);
    setImage(img, sliceUrl(pid, n, { size: 96 })).catch(() => {});
  }
  $("detail-search").onclick = () => searchSlice(pid, idx);
  $("detail-similar").onclick = () => { location.hash = `#similar/${encodeURIComponent(pid)}`; };
  $("detail-similar").textContent = `Patients similar to ${pid}`;
  const back = $("back");
  back.href = state.listHash;
  back.textContent = state.listHash.startsWith("#similar") ? "← back to the similar patients"
    : state.lastResult ? "← back to the results" : "← back to the search";
}

// ------------------------------------------------------------------ similar patients
// patient-level search (GET /api/patients/{id}/similar, the rule of `medhash search --patient`)
function similarFields() {
  const s = state.settings;
  const f = { k: String(Math.min(100, Number(s.k) || 5)) };
  if (s.index) f.index = s.index;
  if (Number(s.rerank) > 0) f.rerank = String(s.rerank);
  return f;
}

function scoreHelp(perSlice) {
  return `patient score, 0 to 1: for each slice of the query patient, 1 − (r − 1) / ${perSlice} for this patient's ` +
    `best z-aligned match, r being its rank among that slice's ${perSlice} nearest slices (0 without an aligned ` +
    "match), averaged over the query's slices. 1: this patient's aligned slice was the nearest for every query slice.";
}

async function showSimilar(pid) {
  if (!pid) {   // the nav tab: the patient chosen in the search view
    const chosen = $("patient").value;
    if (chosen) location.replace(`#similar/${encodeURIComponent(chosen)}`);
    else showError("choose an archive patient in Search first");
    return;
  }
  showError("");
  const fields = similarFields();
  const query = new URLSearchParams(fields).toString();
  const key = `${pid}?${query}`;
  $("similar-patient").textContent = pid;
  preparePlanned(pid);
  if (state.similar && state.similar.key === key) {   // back from a patient: the same answer, no new search
    $("similar-meta").textContent = state.similar.meta;
    return;
  }
  const ticket = ++state.similarTicket;
  state.similar = null;
  const status = $("similar-status");
  const button = $("similar-search");
  $("similar-meta").textContent = "";
  $("similar-results").hidden = true;
  $("similar-table").tBodies[0].replaceChildren();
  status.replaceChildren(el("span", { class: "spinner" }),
    `Searching every slice of ${pid} in index ${fields.index || "(the only one)"} and ranking the other patients…`);
  status.hidden = false;
  $("view-similar").setAttribute("aria-busy", "true");
  button.disabled = true;
  let res;
  try {
    res = await api(`/api/patients/${encodeURIComponent(pid)}/similar?${query}`);
  } catch (e) {
    if (ticket === state.similarTicket) {
      showError(e.message);
      status.textContent = `No similar patients for ${pid}: the server answered with the error above.`;
    }
    return;
  } finally {
    if (ticket === state.similarTicket) {
      button.disabled = false;
      $("view-similar").removeAttribute("aria-busy");
    }
  }
  if (ticket !== state.similarTicket) return;   // another search started meanwhile
  status.hidden = true;
  const meta = `index ${res.index} (${res.channel}, ${res.n_bits} bits) · top ${res.k} · ` +
    `${res.query_slices_searched} query slices, ${res.per_slice} nearest each` +
    (res.rerank ? `, re-ranked from the Hamming top ${Math.max(res.rerank, res.per_slice)}` : "") +
    ` · z tolerance ${res.tolerance_mm} mm · ` +
    (res.excluded_patient ? `${res.excluded_patient} left out` : "own patient left out");
  state.similar = { key, meta };
  $("similar-meta").textContent = meta;
  await renderSimilar(res);
}

// the best few matched pairs: best rank, then Hamming, then nearest the middle of the query patient
function bestPairs(pairs, n) {
  if (!pairs.length) return [];
  const zs = pairs.map((p) => p.query_z_mm).sort((a, b) => a - b);
  const mid = zs[Math.floor(zs.length / 2)];
  return [...pairs].sort((a, b) => a.rank_in_slice - b.rank_in_slice || a.hamming - b.hamming ||
    Math.abs(a.query_z_mm - mid) - Math.abs(b.query_z_mm - mid)).slice(0, n).sort((a, b) => a.query_z_mm - b.query_z_mm);
}

async function renderSimilar(res) {
  const qpid = res.query.patient_id;
  const help = scoreHelp(res.per_slice);
  $("similar-help").textContent = "Patient score (0 to 1, higher is more similar): the mean over the query's slices of " +
    `1 − (r − 1) / ${res.per_slice} for this patient's best z-aligned match (r: its rank among that slice's ` +
    `${res.per_slice} nearest slices; 0 without one). Matched slices: query slices with such a match. ` +
    "z offset: how this patient's anatomy is shifted along z. A click on a row opens the patient; on a picture, that slice.";
  $("similar-score-head").title = help;
  recognisedNotice($("similar-recognised"), res, null);
  showVerdict($("similar-verdict"), $("similar-table"), res.calibration);
  legend($("similar-legend"));
  const rows = [];
  const loads = [];
  for (const r of res.results) {
    const score = Number(r.patient_score);
    const meter = el("meter", { min: "0", max: "1", value: String(score) });
    const pairs = el("div", { class: "pairs" });
    const shown = bestPairs(r.pairs, 3);
    for (const p of shown) {
      const qimg = el("img", { class: "pair-query", alt: `query ${qpid}:${p.query_slice_index}`, width: "96", height: "96" });
      const mimg = el("img", { class: "pair-match", alt: `${r.patient_id}:${p.slice_index}`, width: "96", height: "96" });
      qimg.title = `${qpid}:${p.query_slice_index} (query, z ${p.query_z_mm.toFixed(1)} mm): open this slice`;
      mimg.title = `${r.patient_id}:${p.slice_index} (z ${p.z_mm.toFixed(1)} mm): open this slice`;
      const open = (pid, idx) => (ev) => { ev.stopPropagation(); location.hash = `#slice/${encodeURIComponent(pid)}/${idx}`; };
      qimg.addEventListener("click", open(qpid, p.query_slice_index));
      mimg.addEventListener("click", open(r.patient_id, p.slice_index));
      pairs.append(el("figure", { class: "pair" }, el("div", { class: "pair-images" }, qimg, mimg),
        el("figcaption", {}, `${p.query_slice_index} ↔ ${p.slice_index}`, el("br"),
          ...distanceParts(p), ` · rank ${p.rank_in_slice}`)));
      loads.push(setImage(qimg, sliceUrl(qpid, p.query_slice_index, { size: 96 })).catch((e) => showError(e.message)));
      loads.push(setImage(mimg, sliceUrl(r.patient_id, p.slice_index, { size: 96 })).catch((e) => showError(e.message)));
    }
    const at = shown.length ? bestPairs(r.pairs, 1)[0].slice_index : undefined;
    const tr = el("tr", { class: "similar-row", tabindex: "0", "data-patient": r.patient_id,
                          title: `open ${r.patient_id} in the patient browser` + (at !== undefined ? ` at slice ${at}` : "") },
      el("td", { class: "rank", text: `#${r.rank}` }),
      el("td", {}, el("b", { class: "pid", text: r.patient_id }), el("br"), el("span", { class: "muted", text: "open ›" })),
      el("td", { class: "score", title: help }, el("span", { class: "score-value", text: score.toFixed(3) }), el("br"), meter,
        ...absoluteScore(r)),
      el("td", { text: `${r.matched_slices} of ${res.query_slices_searched}` }),
      el("td", { text: `${r.z_offset_mm >= 0 ? "+" : "−"}${Math.abs(r.z_offset_mm).toFixed(1)} mm` }),
      el("td", {}, pairs));
    const go = () => browsePatient(r.patient_id, at);
    tr.addEventListener("click", go);
    tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") go(); });
    rows.push(tr);
  }
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", { colspan: "6", text: "No other patient has a slice among the nearest of this patient's slices." })));
  }
  $("similar-table").tBodies[0].replaceChildren(...rows);
  $("similar-results").hidden = false;
  await Promise.all(loads);
}

// ------------------------------------------------------------------ planning-time dose
// GET /api/patients/{id}/planned-dose (metrics, neighbours) and its dvh.png, for the similar view's patient
function plannedQuery() {
  const by = $("planned-by").value;
  const f = { neighbours_by: by };
  if (by !== "geometry" && state.settings.index) f.index = state.settings.index;
  return new URLSearchParams(f).toString();
}

// a new patient in the view: no results of another patient stay on screen
function preparePlanned(pid) {
  $("planned-patient").textContent = pid;
  if (state.planned.pid === pid) return;
  state.planned.pid = pid;
  state.planned.ticket++;
  clearPlanned();
  $("planned-status").hidden = true;
  $("planned-run").disabled = false;
}

function clearPlanned() {
  $("planned-results").hidden = true;
  $("planned-meta").textContent = "";
  $("planned-metrics").tBodies[0].replaceChildren();
  $("planned-neighbours").tBodies[0].replaceChildren();
  const img = $("planned-dvh");
  img.removeAttribute("src");
  delete img.dataset.src;
}

function plannedStatus(text, { busy = false, error = false } = {}) {
  const status = $("planned-status");
  status.classList.toggle("error", error);
  status.replaceChildren(...(busy ? [el("span", { class: "spinner" })] : []), text);
  status.hidden = false;
}

// the image loaded (or failed): resolves either way, with whether it loaded
function imageLoaded(img) {
  return new Promise((resolve) => {
    if (img.complete && img.src) { resolve(img.naturalWidth > 0); return; }
    img.addEventListener("load", () => resolve(true), { once: true });
    img.addEventListener("error", () => resolve(false), { once: true });
  });
}

const gy = (v) => (v === null || v === undefined ? "—" : Number(v).toFixed(1));

function plannedMetricRows(metrics) {
  const truth = metrics.truth || {};
  return Object.entries(metrics.predicted).map(([name, p]) => {
    const t = truth[name];
    const d = p === null || t === null || t === undefined ? null : Math.round((p - t) * 10) / 10;
    const diff = d === null ? "—" : (d === 0 ? "0.0" : `${d > 0 ? "+" : "−"}${Math.abs(d).toFixed(1)}`);
    return el("tr", {}, el("td", { text: name }), el("td", { text: gy(p) }), el("td", { text: gy(t) }), el("td", { text: diff }));
  });
}

function plannedNeighbourRows(neighbours) {
  const kinds = [["geometry_distance", "geometry distance", 2], ["ct_score", "CT patient score", 3], ["fused_score", "fused rank score", 4]];
  const kind = kinds.find(([k]) => neighbours.length && neighbours[0][k] !== undefined) || kinds[0];
  $("planned-distance-head").textContent = kind[1];
  return neighbours.map((n) => el("tr", {}, el("td", { text: `#${n.rank}` }), el("td", { text: n.patient_id }),
    el("td", { text: n[kind[0]] === undefined ? "—" : Number(n[kind[0]]).toFixed(kind[2]) })));
}

async function runPlanned() {
  const pid = state.planned.pid;
  if (!pid) return;
  const ticket = ++state.planned.ticket;
  const current = () => ticket === state.planned.ticket;
  const button = $("planned-run");
  const query = plannedQuery();
  const base = `/api/patients/${encodeURIComponent(pid)}/planned-dose`;
  clearPlanned();
  button.disabled = true;
  $("planned").setAttribute("aria-busy", "true");
  plannedStatus(`Predicting the dose of ${pid} from its contours and its similar patients' plans, then its DVHs…`, { busy: true });
  try {
    const res = await api(`${base}?${query}`);
    if (!current()) return;
    const img = $("planned-dvh");
    const loaded = imageLoaded(img);
    await setImage(img, `${base}/dvh.png?${query}`);
    if (!(await loaded)) throw new Error(`the DVH figure of ${pid} could not be loaded`);
    if (!current()) return;
    const how = res.method === "model" ? `dose model ${res.dose_model}` : "the similar patients' plans transferred by anatomy";
    $("planned-meta").textContent = `${pid}: ${how} · ${res.k} similar patients by ${res.neighbours_by} · ` +
      `target levels ${res.levels_gy.map((v) => `${v} Gy`).join(", ")} · ${Number(res.seconds).toFixed(1)} s`;
    $("planned-metrics").tBodies[0].replaceChildren(...plannedMetricRows(res.metrics));
    $("planned-neighbours").tBodies[0].replaceChildren(...plannedNeighbourRows(res.neighbours));
    $("planned-results").hidden = false;
    $("planned-status").hidden = true;
  } catch (e) {
    if (!current()) return;
    clearPlanned();
    plannedStatus(`No planning-time dose for ${pid}: ${e.message}`, { error: true });
  } finally {
    if (current()) {
      button.disabled = false;
      $("planned").removeAttribute("aria-busy");
    }
  }
}

// ------------------------------------------------------------------ archive overview and settings
async function showArchive() {
  const [info, patients, indexes] = await Promise.all([api("/api/archive"), api("/api/patients"), api("/api/indexes")]);
  const rows = [["archive", info.archive], ["patients", info.patients], ["series", info.series], ["slices", info.slices],
    ["slices with dose", info.slices_with_dose],
    ["structures", Object.entries(info.structures).map(([k, v]) => `${k} (${v})`).join(", ") || "none"],
    ["size on disk", `${(info.size_bytes / 2 ** 20).toFixed(1)} MiB`],
    ["model grid", `${info.grid.size} × ${info.grid.size} pixels of ${info.grid.spacing_mm} mm`]];
  $("archive-summary").replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: String(v) }))));
  $("patients-table").tBodies[0].replaceChildren(...patients.map((p) => el("tr", {},
    el("td", { text: p.patient_id }), el("td", { text: String(p.slices) }),
    el("td", { text: `${p.slice_index_min} – ${p.slice_index_max}` }), el("td", { text: String(p.slices_with_dose) }))));
  $("indexes").replaceChildren(...indexes.map((ix) => {
    const m = ix.manifest;
    const models = Object.entries(m.models || {}).map(([ch, x]) => `${ch}: ${x.name}`).join(", ");
    return el("details", {}, el("summary", { text: `${ix.name} — ${m.channel}, ${m.n_bits} bits, ${m.items} slices, models ${models}` }),
      el("pre", { class: "manifest", text: JSON.stringify(m, null, 2) }));
  }));
}

// every index of the archive (name, channel, bits, hasher); with several, none is chosen for the user
function showSettings() {
  const s = state.settings;
  const sel = $("set-index");
  const n = state.indexes.length;
  const first = n === 0 ? "(no index: build one first)" : n === 1 ? `(the archive's only index, ${state.indexes[0].name})`
    : `(choose one of the ${n} indexes)`;
  sel.replaceChildren(el("option", { value: "", text: first }),
    ...state.indexes.map((ix) => el("option", { value: ix.name, text: describeIndex(ix) })));
  sel.value = s.index;
  $("set-index-help").textContent = n > 1 ? "This archive has several indexes: searches need one chosen here." : "";
  $("set-index-list").tBodies[0].replaceChildren(...state.indexes.map((ix) => {
    const tr = el("tr", { "data-index": ix.name, class: ix.name === s.index ? "chosen" : "" },
      el("td", { text: ix.name }), el("td", { text: ix.channel }), el("td", { text: String(ix.n_bits) }),
      el("td", { text: ix.hasher }), el("td", { text: ix.items === undefined ? "—" : String(ix.items) }));
    tr.title = `choose ${ix.name}`;
    tr.addEventListener("click", () => { sel.value = ix.name; });
    return tr;
  }));
  $("set-index-list").hidden = n === 0;
  $("set-k").value = s.k;
  $("set-same").value = s.same;
  $("set-rerank").value = s.rerank;
  $("set-isodose").value = s.isodose;
  $("set-token").value = s.token;
}

async function loadArchive() {
  const health = await api("/api/health");
  if (health.auth && !state.settings.token) {
    showError("this server needs a token: enter it in Settings");
    location.hash = "#settings";
    return false;
  }
  state.archive = await api("/api/archive");
  $("archive-name").textContent = `archive ${state.archive.archive}: ${state.archive.patients} patients, ${state.archive.slices} slices`;
  state.indexes = (await api("/api/indexes")).map((ix) => ({ name: ix.name, channel: ix.manifest.channel,
    n_bits: ix.manifest.n_bits, hasher: (ix.manifest.hasher && ix.manifest.hasher.name) || "kernel-lsh",
    items: ix.manifest.items }));
  if (state.settings.index && !state.indexes.some((ix) => ix.name === state.settings.index)) state.settings.index = "";
  updateDoseField();
  $("detail-window").replaceChildren(...Object.entries(state.archive.windows).map(([name, w]) =>
    el("option", { value: name, text: `${name} (W${w.width} / L${w.level})` })));
  const patients = await api("/api/patients");
  state.patients = patients;
  $("patient").replaceChildren(...patients.map((p) => el("option", { value: p.patient_id, text: `${p.patient_id} (${p.slices} slices)` })));
  if (patients.length) await loadPatient(patients[0].patient_id);
  settingsSummary();
  return true;
}

async function start() {
  $("upload-form").addEventListener("submit", searchUpload);
  $("patient").addEventListener("change", () => loadPatient($("patient").value).catch((e) => showError(e.message)));
  $("slider").addEventListener("input", updatePreview);
  const enlarge = () => { const c = currentSlice(); if (c) location.hash = `#slice/${encodeURIComponent(c.pid)}/${c.idx}`; };
  $("preview").addEventListener("click", enlarge);
  $("preview").addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); enlarge(); } });
  $("slice-search").addEventListener("click", () => { const c = currentSlice(); if (c) searchSlice(c.pid, c.idx); });
  $("similar-search").addEventListener("click", () => {
    const pid = $("patient").value;
    if (!pid) { showError("choose an archive patient first"); return; }
    location.hash = `#similar/${encodeURIComponent(pid)}`;
  });
  $("planned-run").addEventListener("click", runPlanned);
  $("settings-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const s = state.settings;
    s.index = $("set-index").value; s.k = Math.max(1, Number($("set-k").value) || 10);
    s.same = $("set-same").value; s.rerank = Math.max(0, Number($("set-rerank").value) || 0);
    s.token = $("set-token").value.trim(); s.isodose = $("set-isodose").value.trim();
    saveSettings();
    settingsSummary();
    updateDoseField();
    $("settings-saved").textContent = "saved";
    if (!state.archive) loadArchive().then((ok) => { if (ok) { showError(""); route(); } }).catch((e) => showError(e.message));
  });
  window.addEventListener("hashchange", route);
  try {
    if (await loadArchive()) route();
  } catch (e) {
    showError(e.message);
  }
}

document.addEventListener("DOMContentLoaded", start);
