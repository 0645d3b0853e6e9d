// medhash search page: the calibrated parts of a search answer (docs/search.md, "Calibrated
// similarity"): the archive patient a query was recognised as and left out, the percentile of each
// Hamming distance, the absolute patient score and the "no similar slice" verdict. Each part renders
// nothing when its key is absent from the answer. Loaded before app.js, whose el() it uses.
"use strict";

const MATCHED_ON = { series_uid: "series UID", study_uid: "study UID",
                     frame_of_reference_uid: "frame of reference UID", patient_id: "patient ID" };

const PERCENTILE_HELP = "percentile: the share (%) of random pairs of slices of different archive patients whose " +
  "Hamming distance is at most this one. Small: closer than almost every random pair; around 50: no closer than chance.";

const ABSOLUTE_HELP = "absolute score, 0 to 1: 1 − (mean percentile of the matched slice pairs) / 100, unmatched query " +
  "slices counting 100. Unlike the rank-based patient score it says how close the slices are, not only which " +
  "patient is closest: near 0.5 or below, no closer than random pairs.";

// "Hamming 18 · percentile 0.35 · expected 21.0" (+ Euclidean when re-ranked): caption parts of one result or pair
function distanceParts(r) {
  const parts = [`Hamming ${r.hamming}`];
  if (r.percentile !== undefined && r.percentile !== null) {
    parts.push(" · ", el("span", { class: "percentile", title: PERCENTILE_HELP, text: `percentile ${Number(r.percentile).toFixed(2)}` }));
  }
  if (r.expected_hamming !== undefined && r.expected_hamming !== null) {
    parts.push(` · expected ${Number(r.expected_hamming).toFixed(1)}`);
  }
  if (r.euclidean !== undefined) parts.push(` · Euclidean ${Number(r.euclidean).toPrecision(3)}`);
  return parts;
}

// the recognised / left-out patient of an answer, with a button that searches again including it
// (or leaving it out); `toggle(include)` runs that search, null: no button
function recognisedNotice(box, res, toggle) {
  box.replaceChildren();
  box.hidden = true;
  if (!("recognised" in res) && !("excluded_patient" in res)) return;
  const rec = res.recognised;
  const left = res.excluded_patient;
  let text;
  if (rec) {
    const how = (rec.matched_on || []).map((k) => MATCHED_ON[k] || k).join(", ");
    text = `query recognised as archive patient ${rec.patient_id}` + (how ? ` (matched on ${how})` : "") +
      (left ? " — left out" : " — included");
  } else if (left && toggle) {
    text = `the query's own patient ${left} is left out`;
  } else {
    return;
  }
  box.append(el("span", { class: "recognised-text", text }));
  if (toggle) {
    const include = Boolean(left);
    const button = el("button", { type: "button", class: "secondary recognised-toggle",
                                  text: include ? "include it" : "leave it out" });
    button.addEventListener("click", () => toggle(include));
    box.append(button);
  }
  box.hidden = false;
}

// the calibration verdict: a banner for "no similar slice" / "no similar patient" (and `target`
// greyed), a quiet line for "similar"; nothing without a calibration
function showVerdict(box, target, cal) {
  box.replaceChildren();
  box.className = "verdict";
  box.hidden = true;
  target.classList.remove("dissimilar");
  if (!cal || !cal.verdict) return;
  const reference = cal.random_median !== undefined && cal.random_median !== null
    ? ` Random pairs: median Hamming ${cal.random_median}` +
      (cal.random_p05 !== undefined ? `, 5th percentile ${cal.random_p05}` : "") +
      (cal.reference_pairs ? ` (${cal.reference_pairs} reference pairs).` : ".")
    : "";
  // the server's sentence, without the verdict it may start with (the banner's title says it),
  // as a sentence of its own before the reference
  let text = (cal.verdict_text || "").replace(new RegExp("^" + cal.verdict + " in this archive: ", "i"), "");
  if (text) text = text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? "" : ".");
  if (cal.verdict === "similar") {
    box.classList.add("similar");
    box.textContent = text + reference;
    box.hidden = !box.textContent;
    return;
  }
  const title = cal.verdict.charAt(0).toUpperCase() + cal.verdict.slice(1) + " in this archive";
  box.classList.add("none");
  box.append(el("strong", { text: title }), text + reference);
  box.hidden = false;
  target.classList.add("dissimilar");
}

// "absolute 0.12" beside a patient's rank-based score, or nothing
function absoluteScore(r) {
  if (r.absolute_score === undefined || r.absolute_score === null) return [];
  const mp = r.match_percentile !== undefined ? ` (mean percentile ${Number(r.match_percentile).toFixed(1)})` : "";
  return [el("br"), el("span", { class: "absolute", title: ABSOLUTE_HELP,
                                 text: `absolute ${Number(r.absolute_score).toFixed(3)}${mp}` })];
}
