// The jobs table: newest first, filter by state, cursor paging. The first page takes new jobs
// live from the global event stream; older pages stay put (their cursors are job ids, so they
// do not shift when jobs arrive) and only update the rows they show.

import { getJob, jobCounts, listJobs } from "./api.js";
import { STATES, fill, formatNumber, h } from "./dom.js";
import { jobRow } from "./job_row.js";
import { onJobEvent, onStreamStatus, stateOf } from "./live.js";

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
  /** Jobs with an event newer than their read in flight: read again when it is back. */
  const stale = new Set();
  const asked = new Set();    // jobs whose events asked for a re-read of the first page
  const offPage = new Set();  // jobs a re-read did not bring onto the first page
  let refreshTimer = null;
  let walking = false;  // goTo() is finding the cursor of a page named in the URL
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
  // Whatever happened before the stream was (re)opened is read from the table itself, empty
  // or not: a job uploaded before the first stream opened sent its events to nobody, and an
  // empty table that skipped this re-read said "No jobs yet" while the counts said 1.
  onStreamStatus((status) => {
    // Not while goTo() walks to a page from the URL: a load now would cut the walk short.
    if (status === "live" && !walking) load({ quiet: true });
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
    if (changed) offPage.clear();
    if (changed || !jobs.length) {
      goTo(wanted);
    } else {
      // Back from a job page: deletions send no event, so re-read the page shown.
      load({ quiet: true });
    }
  }

  async function goTo(wanted) {
    const seq = ++loadSeq;
    walking = true;
    try {
      await walk(seq, wanted);
    } finally {
      walking = false;
    }
    if (seq !== loadSeq) return;
    page = Math.min(wanted, pageCursors.length);
    cursor = pageCursors[page - 1];
    load();
  }

  /** Walk forward from the last page whose cursor is known, up to page ``wanted``. */
  async function walk(seq, wanted) {
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
    if (page === 1 && !walking) {
      // A job this page does not show yet (progress too: its earlier events may have passed
      // before the stream opened): re-read the first page, once per burst. The timer is not
      // pushed back by later events, so a steady stream of them cannot starve the re-read.
      // A job re-read once and still not on this page (an older one) is not asked for again
      // on each of its progress events.
      if (event.type === "job.progress"
        && ((filters.state && filters.state !== "running") || offPage.has(event.job_id))) return;
      asked.add(event.job_id);
      if (!refreshTimer) {
        refreshTimer = setTimeout(() => {
          refreshTimer = null;
          const ids = [...asked];
          asked.clear();
          load({ quiet: true }).then(() => {
            for (const id of ids) if (!rows.has(id)) offPage.add(id);
          });
        }, 250);
      }
    } else if (event.type === "job.progress") {
      return;
    } else if (event.type === "job.queued" && (!filters.state || filters.state === "queued")) {
      newWhileAway += 1;
      fill(notice, `${newWhileAway} new job${newWhileAway > 1 ? "s" : ""} since this page was `
        + "opened. ", h("button", { type: "button", class: "button button-small",
        onclick: () => setHash({ ...filters, page: 1 }) }, "Show newest"));
      notice.hidden = false;
    }
  }

  function refetch(id) {
    if (refetching.has(id)) {
      // A read is in flight and may have been answered before this event: read again once
      // it is back, or a slow answer ("running") would overwrite the newer state for good.
      stale.add(id);
      return;
    }
    refetching.add(id);
    // Coalesce a burst of events for one job into one read.
    setTimeout(() => {
      getJob(id).then((job) => {
        const row = rows.get(id);
        if (row && !stale.has(id)) row.update(job);
        if (job.parent_id === filters.parentId && filters.parentId) scheduleCounts();
      }, () => {}).finally(() => {
        refetching.delete(id);
        if (stale.delete(id)) refetch(id);
      });
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
