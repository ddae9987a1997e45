// The jobs table: newest first, filter by state, cursor paging. The first page takes new jobs
// live from the global event stream; older pages stay put (their cursors are job ids, so they
// do not shift when jobs arrive) and only update the rows they show.

import { getJob, jobCounts, listJobs } from "./api.js";
import {
  STATES, TERMINAL, badge, fill, formatBytes, formatNumber, h, jobDuration, progressBar,
  progressState, showProgress, timeAgo,
} from "./dom.js";
import { onJobEvent, onStreamStatus, stateOf } from "./live.js";
import { sortArtifacts } from "./render.js";
import { ranAs } from "./results.js";

const PAGE_SIZE = 20;

export function jobsTable() {
  let filters = { state: "", parentId: "" };
  // pageCursors[i] is the cursor of page i + 1 (null for the first); the page is in the URL,
  // so a reload of page 4 walks the three pages before it to find its cursor.
  let pageCursors = [null];
  let page = 1;
  let cursor = null;
  let counts = null;
  let parentCounts = null;
  const parentNames = new Map();
  let nextCursor = null;
  let jobs = [];
  let loadSeq = 0;
  let newWhileAway = 0;
  const rows = new Map();
  const refetching = new Set();
  let refreshTimer = null;
  let countsTimer = null;

  const title = h("h2", { id: "jobs-title" }, "Jobs");
  const filterBar = h("div", { class: "filters", role: "group", "aria-label": "Filter by state" });
  const parentChip = h("div", { class: "parent-chip", hidden: true });
  const tbody = h("tbody", {});
  const table = h("table", { class: "jobs", "aria-labelledby": "jobs-title" },
    h("thead", {}, h("tr", {},
      ["State", "File", "Pipeline", "Progress", "Attempts", "Created", "Duration", "Result"].map(
        (t) => h("th", { scope: "col" }, t)))),
    tbody);
  const message = h("div", { class: "table-message", role: "status", "aria-live": "polite" });
  const notice = h("div", { class: "notice", hidden: true });
  const newer = h("button", { type: "button", class: "button", onclick: goNewer, disabled: true },
    "← Newer");
  const older = h("button", { type: "button", class: "button", onclick: goOlder, disabled: true },
    "Older →");
  const pageLabel = h("span", { class: "muted page-label" });
  const el = h("section", { class: "card jobs-card", "aria-labelledby": "jobs-title" },
    h("div", { class: "jobs-head" }, title, filterBar),
    parentChip, notice,
    h("div", { class: "table-wrap" }, table),
    message,
    h("nav", { class: "pager", "aria-label": "Pages" }, newer, pageLabel, older));

  const filterButtons = new Map();
  for (const state of ["", ...STATES]) {
    const count = h("span", { class: "count" });
    const btn = h("button", { type: "button", class: "chip", "aria-pressed": "false",
      dataset: { state: state || "all" },
      onclick: () => setHash({ ...filters, state, page: 1 }) },
      state ? badgeDot(state) : null, state || "all", count);
    filterButtons.set(state, { btn, count });
    filterBar.append(btn);
  }

  onJobEvent(onEvent);
  // Whatever happened before the stream was (re)opened is read from the table itself.
  onStreamStatus((status) => {
    if (status === "live" && jobs.length) load({ quiet: true });
  });
  setInterval(tick, 1000);

  function setHash(f) {
    const q = new URLSearchParams();
    if (f.state) q.set("state", f.state);
    if (f.parentId) q.set("parent", f.parentId);
    if (f.page > 1) q.set("page", String(f.page));
    const qs = q.toString();
    location.hash = qs ? `#/?${qs}` : "#/";
  }

  /** Called by the router with the hash query. */
  function setFilters(params) {
    const next = { state: params.get("state") || "", parentId: params.get("parent") || "" };
    if (!STATES.includes(next.state)) next.state = "";
    const wanted = Math.max(1, Number.parseInt(params.get("page") || "1", 10) || 1);
    const changed = next.state !== filters.state || next.parentId !== filters.parentId
      || wanted !== page;
    if (next.state !== filters.state || next.parentId !== filters.parentId) {
      pageCursors = [null];
      parentCounts = null;
    }
    filters = next;
    for (const [state, { btn }] of filterButtons) {
      btn.setAttribute("aria-pressed", String(state === filters.state));
    }
    if (filters.parentId) {
      const parentLink = h("a", { href: `#/jobs/${filters.parentId}` },
        h("code", {}, filters.parentId));
      fill(parentChip, "Showing the child jobs of ", parentLink, " ",
        h("a", { href: "#/", class: "button button-quiet button-small" }, "Show all jobs"));
      getJob(filters.parentId).then((p) => { fill(parentLink, p.input.filename); }, () => {});
    }
    parentChip.hidden = !filters.parentId;
    if (changed || !jobs.length) {
      goTo(wanted);
    } else {
      // Back from a job page: deletions send no event, so re-read the page shown.
      load({ quiet: true });
    }
  }

  async function goTo(wanted) {
    const seq = ++loadSeq;
    // Walk forward from the last page whose cursor is known.
    while (pageCursors.length < wanted) {
      const k = pageCursors.length - 1;
      let got;
      try {
        got = await listJobs({ state: filters.state, parentId: filters.parentId,
          limit: PAGE_SIZE, cursor: pageCursors[k] });
      } catch {
        break;
      }
      if (seq !== loadSeq) return;
      if (!got.next_cursor || got.items.length < PAGE_SIZE) break;
      pageCursors.push(got.next_cursor);
    }
    page = Math.min(wanted, pageCursors.length);
    cursor = pageCursors[page - 1];
    load();
  }

  async function load({ quiet = false } = {}) {
    const seq = ++loadSeq;
    if (!quiet) {
      el.setAttribute("aria-busy", "true");
      if (!jobs.length) fill(message, h("span", { class: "spinner", "aria-hidden": "true" }),
        "Loading jobs…");
    }
    try {
      const page = await listJobs({ state: filters.state, parentId: filters.parentId,
        limit: PAGE_SIZE, cursor });
      if (seq !== loadSeq) return;
      show(page.items, page.next_cursor);
    } catch (err) {
      if (seq !== loadSeq) return;
      fill(message, h("div", { class: "problem", role: "alert" },
        `Could not load jobs: ${err.detail} `, h("code", {}, err.code), " ",
        h("button", { type: "button", class: "button button-small", onclick: () => load() },
          "Try again")));
    } finally {
      if (seq === loadSeq) el.removeAttribute("aria-busy");
    }
    refreshCounts();
  }

  function show(items, next) {
    jobs = items;
    nextCursor = next;
    const keep = new Set(items.map((j) => j.id));
    for (const [id, row] of rows) {
      if (!keep.has(id)) {
        row.el.remove();
        rows.delete(id);
      }
    }
    let prev = null;
    for (const job of items) {
      let row = rows.get(job.id);
      if (!row) {
        row = jobRow(job, parentName);
        rows.set(job.id, row);
      } else {
        row.update(job);
      }
      // Keep existing row elements (and any focus inside them) while ordering them.
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== row.el) tbody.insertBefore(row.el, want);
      prev = row.el;
    }
    if (items.length) {
      fill(message);
    } else {
      const what = filters.state ? `No ${filters.state} jobs` : "No jobs yet";
      fill(message, h("div", { class: "empty" },
        h("strong", {}, `${what}${filters.parentId ? " under this job" : ""}.`),
        !filters.state && !filters.parentId && page === 1
          ? h("span", { class: "muted" }, " Drop a file above to start one.") : null));
    }
    table.hidden = !items.length;
    const first = page === 1;
    newer.disabled = first;
    older.disabled = !next || items.length < PAGE_SIZE;
    renderPageLabel();
    if (first) {
      newWhileAway = 0;
      notice.hidden = true;
    }
  }

  /** "21–40 of 71": the total from the state counts (or the parent's children counts). */
  function renderPageLabel() {
    const start = (page - 1) * PAGE_SIZE + 1;
    const end = start + jobs.length - 1;
    const source = filters.parentId ? parentCounts : counts;
    let total = null;
    if (source) {
      total = filters.state ? source[filters.state] || 0
        : source.total ?? STATES.reduce((a, st) => a + (source[st] || 0), 0);
    }
    if (!jobs.length) {
      pageLabel.textContent = page > 1 ? `Page ${page}` : "";
    } else if (total !== null && total >= end) {
      pageLabel.textContent = `${formatNumber(start)}–${formatNumber(end)} of ${formatNumber(total)}`;
    } else {
      pageLabel.textContent = `${formatNumber(start)}–${formatNumber(end)} · page ${page}`;
    }
  }

  function goOlder() {
    if (!jobs.length) return;
    pageCursors[page] = nextCursor || jobs[jobs.length - 1].id;
    pageCursors.length = page + 1;
    setHash({ ...filters, page: page + 1 });
    title.scrollIntoView({ block: "nearest" });
  }

  function goNewer() {
    if (page <= 1) return;
    setHash({ ...filters, page: page - 1 });
  }

  function matches(job) {
    return (!filters.state || job.state === filters.state)
      && (!filters.parentId || job.parent_id === filters.parentId);
  }

  function onEvent(event) {
    const row = rows.get(event.job_id);
    const state = stateOf(event.type);
    if (event.type !== "job.progress") scheduleCounts();
    if (row) {
      if (event.type === "job.progress") {
        row.update({ ...row.job, state, progress: event.data || {} });
      } else {
        // A failure event carries its error: show the code at once, before the re-read.
        const error = event.type === "job.failed" ? event.data?.error || row.job.error : row.job.error;
        row.update({ ...row.job, state, error });
        refetch(event.job_id);
      }
      return;
    }
    if (event.type === "job.progress") return;
    if (page === 1) {
      // A job this page does not show yet: re-read the first page (once per burst).
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(() => load({ quiet: true }), 250);
    } else if (event.type === "job.queued" && (!filters.state || filters.state === "queued")) {
      newWhileAway += 1;
      fill(notice, `${newWhileAway} new job${newWhileAway > 1 ? "s" : ""} since this page was `
        + "opened. ", h("button", { type: "button", class: "button button-small",
        onclick: () => setHash({ ...filters, page: 1 }) }, "Show newest"));
      notice.hidden = false;
    }
  }

  function refetch(id) {
    if (refetching.has(id)) return;
    refetching.add(id);
    // Coalesce a burst of events for one job into one read.
    setTimeout(() => {
      getJob(id).then((job) => {
        const row = rows.get(id);
        if (row) row.update(job);
        if (job.parent_id === filters.parentId && filters.parentId) scheduleCounts();
      }, () => {}).finally(() => refetching.delete(id));
    }, 100);
  }

  function scheduleCounts() {
    clearTimeout(countsTimer);
    countsTimer = setTimeout(refreshCounts, 200);
  }

  async function refreshCounts() {
    // Under a parent the chips count its children (the job's `children`), not every job.
    const parentId = filters.parentId;
    let shown = null;
    if (parentId) {
      try {
        const parent = await getJob(parentId);
        if (parentId !== filters.parentId) return;
        parentCounts = parent.children || {};
        shown = parentCounts;
      } catch {
        shown = null;
      }
    } else {
      counts = await jobCounts();
      if (filters.parentId) return;
      shown = counts;
    }
    if (!shown) {
      for (const { count } of filterButtons.values()) count.textContent = "";
      renderPageLabel();
      return;
    }
    let total = 0;
    for (const state of STATES) {
      total += shown[state] || 0;
      filterButtons.get(state).count.textContent = String(shown[state] || 0);
    }
    filterButtons.get("").count.textContent = String(shown.total ?? total);
    renderPageLabel();
  }

  function tick() {
    if (el.closest("[hidden]")) return;
    for (const row of rows.values()) row.tick();
  }

  function parentName(id, fn) {
    if (parentNames.has(id)) {
      const known = parentNames.get(id);
      if (typeof known === "string") fn(known);
      else known.push(fn);
      return;
    }
    const waiting = [fn];
    parentNames.set(id, waiting);
    getJob(id).then((p) => {
      parentNames.set(id, p.input.filename);
      for (const f of waiting) f(p.input.filename);
    }, () => parentNames.delete(id));
  }

  return { el, setFilters, reload: () => load({ quiet: true }), matches, parentName };
}

function badgeDot(state) {
  return h("span", { class: `dot dot-${state}`, "aria-hidden": "true" });
}

/** The file most people want from a job: the largest image, the data, or the first artifact. */
function mainArtifact(job) {
  const arts = job.artifacts || [];
  if (!arts.length) return null;
  const images = arts.filter((a) => a.media_type.startsWith("image/")).sort((a, b) => b.size - a.size);
  if (ranAs(job) === "image" && images.length) return images[0];
  return arts.find((a) => a.name === "data.parquet") || arts.find((a) => a.name === "text.txt")
    || arts[0];
}

function jobRow(initial, parentName) {
  let job = initial;
  const stateCell = h("td", { dataset: { label: "State" }, class: "cell-state" });
  const link = h("a", { href: `#/jobs/${job.id}`, class: "job-link" });
  const thumb = h("span", { class: "row-thumb-slot" });
  const fileSub = h("span", { class: "muted small" });
  const parentLine = h("span", { class: "small parent-line", hidden: true });
  const fileCell = h("td", { dataset: { label: "File" }, class: "cell-file" }, thumb,
    h("span", { class: "file-text" }, link, fileSub, parentLine));
  const pipelineCell = h("td", { dataset: { label: "Pipeline" }, class: "cell-pipeline" });
  const bar = progressBar(`Progress of ${job.input.filename}`, 0);
  const pct = h("span", { class: "pct" });
  const progressCell = h("td", { dataset: { label: "Progress" }, class: "cell-progress" }, bar, pct);
  const attemptsCell = h("td", { dataset: { label: "Attempts" }, class: "num" });
  const createdCell = h("td", { dataset: { label: "Created" } });
  const durationCell = h("td", { dataset: { label: "Duration" }, class: "num" });
  const actionCell = h("td", { dataset: { label: "Result" }, class: "cell-action" });
  const el = h("tr", { dataset: { jobId: job.id } }, stateCell, fileCell, pipelineCell,
    progressCell, attemptsCell, createdCell, durationCell, actionCell);
  let lastState = null;
  let thumbKey = null;
  let actionKey = null;

  function update(next) {
    job = next;
    el.dataset.state = job.state;
    const rejected = job.result && typeof job.result.rejected === "number" ? job.result.rejected : 0;
    const stateKey = `${job.state}/${rejected}`;
    if (stateKey !== lastState) {
      // A success with rejected rows is not a clean success: say so beside the badge.
      fill(stateCell, badge(job.state), rejected && job.state === "succeeded"
        ? h("span", { class: "warn-chip", title: "Some input lines could not be read" },
          `${formatNumber(rejected)} rejected`) : null);
      lastState = stateKey;
    }
    link.textContent = job.input.filename || job.id;
    fileSub.textContent = ` ${formatBytes(job.input.size)}`
      + (job.error ? ` · ${job.error.code}` : "");
    if (job.parent_id && parentLine.hidden) {
      const a = h("a", { href: `#/jobs/${job.parent_id}` }, "its archive");
      fill(parentLine, "from ", a);
      parentLine.hidden = false;
      parentName(job.parent_id, (name) => { a.textContent = name; });
    }
    const kind = ranAs(job);
    fill(pipelineCell, h("code", {}, kind),
      kind !== job.pipeline ? h("span", { class: "muted small" }, ` via ${job.pipeline}`) : null);
    const images = sortArtifacts((job.artifacts || []).filter((a) => a.media_type.startsWith("image/")));
    if (kind === "image") images.sort((a, b) => a.size - b.size);
    const smallest = images[0] || null;
    if ((smallest && smallest.url) !== thumbKey) {
      thumbKey = smallest && smallest.url;
      fill(thumb, smallest ? h("img", { src: smallest.url, alt: "", class: "row-thumb",
        loading: "lazy", decoding: "async", width: "40", height: "40" }) : null);
    }
    const main = mainArtifact(job);
    if ((main && main.url) !== actionKey) {
      actionKey = main && main.url;
      fill(actionCell, main ? h("a", { href: main.url, download: main.name,
        class: "button button-small download", "aria-label": `Download ${main.name} of ${job.input.filename}` },
      "Download") : null);
    }
    const ps = progressState(job);
    showProgress(bar, ps);
    bar.classList.toggle("bar-failed", false);
    pct.textContent = ps.hidden ? "" : ps.indeterminate ? "…" : `${Math.round((ps.fraction || 0) * 100)}%`;
    bar.title = ps.text;
    attemptsCell.textContent = `${job.attempts}/${job.max_attempts}`;
    fill(createdCell, timeAgo(job.created_at));
    durationCell.textContent = jobDuration(job);
  }

  function tick() {
    if (!TERMINAL.has(job.state)) durationCell.textContent = jobDuration(job);
    const t = createdCell.firstChild;
    if (t && t.dataset && t.dataset.ago) fill(createdCell, timeAgo(job.created_at));
  }

  update(initial);
  return { el, update, tick, get job() { return job; } };
}
