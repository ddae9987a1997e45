// A job's result as its pipeline means it: an image's renditions, a PDF's pages, a table's
// rows and rejects, an archive's children. Anything else (and every field) via renderValue.

import { authHeaders } from "./auth.js";
import { fill, formatBytes, formatNumber, h, humanKey } from "./dom.js";
import { parseCsv, renderValue } from "./render.js";

/** The pipeline that produced the result: "auto" jobs say where they were routed. */
export function ranAs(job) {
  return (job.result && job.result.routed_to) || job.pipeline;
}

/** The result section's content. */
export function resultView(job) {
  const result = job.result;
  const kind = ranAs(job);
  const parts = [];
  if (job.pipeline === "auto" && result.routed_to) {
    parts.push(h("p", { class: "routed" }, "The ", h("code", {}, "auto"),
      " pipeline routed this file to ", h("strong", { class: "routed-to" }, result.routed_to), "."));
  }
  const special = { image: imageResult, pdf: pdfResult, table: tableResult, archive: archiveResult };
  if (special[kind]) {
    parts.push(special[kind](job, result));
    parts.push(h("details", { class: "all-fields" }, h("summary", {}, "All result fields"),
      renderValue(result)));
  } else {
    parts.push(renderValue(result));
  }
  return parts;
}

const kv = (pairs) => h("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [
  h("dt", {}, k), h("dd", {}, v)]));

/**
 * Notes on image renditions, keyed by artifact name: a size wider than the source is not
 * upscaled, so two sizes can give the same pixels.
 */
export function renditionNotes(result) {
  const notes = new Map();
  const list = [...(result?.renditions || [])].sort((a, b) => a.size - b.size);
  const byWidth = new Map();
  for (const r of list) {
    const same = byWidth.get(r.width);
    if (same) {
      notes.set(r.name, `Same pixels as ${same.name}: the source is ${result.width} px wide and is never upscaled.`);
    } else {
      byWidth.set(r.width, r);
      if (r.width < r.size) notes.set(r.name, `${r.width} px wide: the source is narrower than ${r.size} px.`);
    }
  }
  return notes;
}

function imageResult(job, r) {
  const notes = renditionNotes(r);
  const renditions = [...(r.renditions || [])].sort((a, b) => a.size - b.size);
  const url = (name) => job.artifacts.find((a) => a.name === name);
  return h("div", { class: "result-image" },
    kv([
      ["Size", `${formatNumber(r.width)} × ${formatNumber(r.height)} px`],
      ["Format", r.format],
      ["Colour mode", r.mode],
      ["Transparency", r.alpha ? "yes" : "no"],
      ["EXIF", r.exif && Object.keys(r.exif).length ? renderValue(r.exif, 1) : "none"],
    ]),
    renditions.length ? h("div", { class: "table-wrap" }, h("table", { class: "data renditions" },
      h("caption", {}, "Renditions, smallest first"),
      h("thead", {}, h("tr", {}, ["File", "Asked width", "Pixels", "Bytes", "Note"].map(
        (t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, renditions.map((x) => {
        const a = url(x.name);
        return h("tr", { dataset: { rendition: x.name } },
          h("th", { scope: "row" }, a ? h("a", { href: a.url, download: x.name }, x.name) : x.name),
          h("td", { class: "num" }, `${x.size} px`),
          h("td", { class: "num" }, `${x.width} × ${x.height}`),
          h("td", { class: "num" }, a ? formatBytes(a.size) : "—"),
          h("td", { class: "small" }, notes.get(x.name) || ""));
      })))) : null);
}

function pdfResult(job, r) {
  const flags = Object.entries(r.active_content || {}).filter(([, v]) => v).map(([k]) => humanKey(k));
  const meta = Object.entries(r.metadata || {}).filter(([, v]) => v !== null && v !== "");
  const previews = (r.previews || []).map((p) => ({ ...p,
    artifact: job.artifacts.find((a) => a.name === p.name) })).filter((p) => p.artifact);
  const dialog = h("dialog", { class: "page-dialog", "aria-label": "Page preview" });
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
  const open = (p) => {
    fill(dialog, h("form", { method: "dialog", class: "dialog-head" },
      h("strong", {}, `Page ${p.page} of ${r.pages}`),
      h("a", { href: p.artifact.url, target: "_blank", rel: "noopener" }, "Open image"),
      h("button", { class: "button button-small", value: "close" }, "Close")),
    h("img", { src: p.artifact.url, alt: `Page ${p.page}`, class: "page-large" }));
    dialog.showModal();
  };
  const missing = r.pages - previews.length;
  return h("div", { class: "result-pdf" },
    kv([
      ["Pages", formatNumber(r.pages)],
      ["Pages with text", formatNumber(r.text_pages)],
      ["Encrypted", r.encrypted ? "yes" : "no"],
      ["Active content", flags.length ? h("strong", { class: "error-text" }, flags.join(", "))
        : "none found"],
    ]),
    previews.length ? h("div", { class: "page-strip", role: "list", "aria-label": "Page previews" },
      previews.map((p) => h("button", { type: "button", class: "page-thumb", role: "listitem",
        "aria-label": `Enlarge page ${p.page}`, onclick: () => open(p) },
      h("img", { src: p.artifact.url, alt: "", loading: "lazy" }),
      h("span", { class: "small" }, `Page ${p.page}`)))) : null,
    missing > 0 ? h("p", { class: "muted small" }, `${missing} of ${r.pages} pages have no preview `
      + "(the previews option renders the first pages only); their text is in pages.json and "
      + "text.txt below.") : null,
    meta.length ? h("details", { class: "pdf-meta" }, h("summary", {}, "Document metadata"),
      kv(meta.map(([k, v]) => [humanKey(k), pdfDate(v)]))) : null,
    dialog);
}

/** "D:20261130190203+00'00'" -> a readable date; other values unchanged. */
function pdfDate(v) {
  const m = /^D:(\d{4})(\d\d)(\d\d)(\d\d)?(\d\d)?(\d\d)?/.exec(String(v));
  if (!m) return String(v);
  const [, y, mo, d, hh = "00", mi = "00", ss = "00"] = m;
  return `${y}-${mo}-${d} ${hh}:${mi}:${ss}`;
}

function tableResult(job, r) {
  const preview = h("div", { class: "data-preview" }, h("p", { class: "muted" }, "Loading rows…"));
  const textual = ["csv", "tsv"].includes(r.format);
  if (textual) loadRows(job, r, preview);
  return h("div", { class: "result-table" },
    r.rejected ? h("p", { class: "warn-box", role: "note" },
      h("strong", {}, `${formatNumber(r.rejected)} line${r.rejected === 1 ? " was" : "s were"} rejected`),
      `: ${formatNumber(r.rows)} rows were read. The lines that could not be read are in `,
      h("code", {}, "rejects.csv"), " below.") : null,
    kv([
      ["Rows", formatNumber(r.rows)],
      ["Columns", h("ul", { class: "inline-list" }, (r.schema || []).map((c) => h("li", {},
        `${c.name} `, h("code", { class: "small" }, c.type))))],
      ["Format", `${String(r.format || "").toUpperCase()}${r.encoding ? ` · ${r.encoding}` : ""}`],
      r.dialect ? ["Dialect", `delimiter ${JSON.stringify(r.dialect.delimiter)}`
        + `${r.dialect.header ? " · header row" : " · no header"}`] : null,
    ]),
    textual ? h("h4", {}, "First rows of the input") : null,
    textual ? preview : null);
}

async function loadRows(job, r, box) {
  try {
    const response = await fetch(job.input.url,
      { headers: authHeaders({ Range: "bytes=0-32767" }) });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const text = await response.text();
    const delimiter = r.dialect?.delimiter || (r.format === "tsv" ? "\t" : ",");
    let rows = parseCsv(text, delimiter, 22);
    if (job.input.size > 32768) rows = rows.slice(0, -1);  // the last line may be cut short
    const head = r.dialect?.header === false ? null : rows.shift();
    const shown = rows.slice(0, 20);
    fill(box, h("div", { class: "table-wrap" }, h("table", { class: "data rows-table" },
      head ? h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))) : null,
      h("tbody", {}, shown.map((row) => h("tr", {}, row.map((c) => h("td", {}, c))))))),
    h("p", { class: "muted small" }, `First ${shown.length} lines of the input, as written `
      + "(rejected lines included)."));
  } catch (err) {
    fill(box, h("p", { class: "muted" }, `No preview of the rows (${err.message}).`));
  }
}

function archiveResult(job, r) {
  const entries = r.entries || [];
  return h("div", { class: "result-archive" },
    kv([
      ["Format", String(r.format || "").toUpperCase()],
      ["Files", formatNumber(r.files)],
      ["Extracted", formatNumber(r.extracted)],
      ["Total size", formatBytes(r.total_bytes)],
      r.skipped && r.skipped.length ? ["Skipped", renderValue(r.skipped, 1)] : null,
    ]),
    entries.length ? h("div", { class: "table-wrap" }, h("table", { class: "data entries" },
      h("caption", {}, "Entries"),
      h("thead", {}, h("tr", {}, ["Name", "Size", "Child job"].map(
        (t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, entries.slice(0, 500).map((e) => h("tr", {},
        h("th", { scope: "row" }, e.name),
        h("td", { class: "num" }, formatBytes(e.size)),
        h("td", {}, e.child_id ? h("a", { href: `#/jobs/${e.child_id}`, class: "child-link" },
          "Open job") : h("span", { class: "muted" }, "—"))))))) : null);
}
