// medhash search page: isodose levels chosen in Settings ("Isodose lines": empty = the archive's fixed
// 10 to 70 Gy; "95,80,50,20%" = percent of the query's maximum dose; "20,40,60" = Gy). Resolved by
// GET /api/isodose into Gy levels with their colours; the result pictures get the same
// ?isodose=...&reference_gy=... so that every picture of one page draws the same absolute levels.
// Loaded before app.js, whose el() and api() it uses.
"use strict";

// the drawing of one result page: { params (added to every slice URL), title, levels: [{gy, colour, label}] }
// `queryMax`: the query's maximum dose, Gy (null: unknown or no dose)
async function isodoseDrawing(text, queryMax) {
  const fixed = { params: {}, title: "isodose lines:",
                  levels: (state.archive ? state.archive.isodose : []).map((lv) => ({ ...lv, label: `${lv.gy} Gy` })) };
  text = (text || "").trim();
  if (!text) return fixed;
  const top = Number(queryMax);   // the API takes references above 0 and up to 200 Gy
  const ref = queryMax !== null && queryMax !== undefined && top > 0 && top <= 200 ? top : null;
  const q = new URLSearchParams({ text });
  if (ref !== null) q.set("reference_gy", String(ref));
  const iso = await api("/api/isodose?" + q.toString());
  const params = { isodose: text };
  if (iso.unit === "%" && ref !== null) params.reference_gy = String(ref);
  if (iso.unit === "%" && ref === null) {   // each picture's own maximum: the levels in %, the palette's colours
    const palette = (state.archive && state.archive.palette) || [];
    return { params, title: "isodose lines, % of each picture's own maximum dose (the query's is not known):",
             levels: iso.values.map((v, i) => ({ gy: null, colour: palette[i % palette.length], label: `${v} %` })) };
  }
  const title = iso.unit === "%" ? `${iso.title}:` : "isodose lines:";
  return { params, title, levels: iso.levels };
}

// the legend of a drawing (isodoseDrawing's answer)
function isodoseLegend(box, drawing) {
  box.replaceChildren(el("span", { text: drawing.title }));
  for (const lv of drawing.levels) {
    const sw = el("span", { class: "swatch" });
    sw.style.background = lv.colour;
    box.append(el("span", { class: "level" }, sw, lv.label));
  }
}
