// The jobs table: newest first, filter by state, cursor paging. The first page takes new jobs
// live from the global event stream; older pages stay put (their cursors are job ids, so they
// do not shift when jobs arrive) and only update the rows they show.

import { getJob, jobCounts, listJobs } from "./api.js";
import {
  STATES, TERMINAL, badge, fill, formatBytes, h, jobDuration, progressBar, setProgress, timeAgo,
} from "./dom.js";
import { onJobEvent, onStreamStatus, stateOf } from "./live.js";

const PAGE_SIZE = 20;

export function jobsTable() {
  let filters = { state: "", parentId: "" };
  let cursors = [];  // cursors of the pages before this one; [] = first page
  let cursor = null;
  let nextCursor = null;
  let jobs = [];
  let loadSeq = 0;
  let newWhileAway = 0;
  const rows = new Map();
  const refetching = new Set();
  const asked = new Set();    // jobs whose events asked for a re-read of the first page
  const offPage = new Set();  // jobs a re-read did not bring onto the first page
  let refreshTimer = null;
  let countsTimer = null;

  const title = h("h2", { id: "jobs-title" }, "Jobs");
  const filterBar = h("div", { class: "filters", role: "group", "aria-label": "Filter by state" });
  const parentChip = h("div", { class: "parent-chip", hidden: true });
  const tbody = h("tbody", {});
  const table = h("table", { class: "jobs", "aria-labelledby": "jobs-title" },
    h("thead", {}, h("tr", {},
      ["State", "File", "Pipeline", "Progress", "Attempts", "Created", "Duration"].map(
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
      onclick: () => setHash({ ...filters, state }) },
      state ? badgeDot(state) : null, state || "all", count);
    filterButtons.set(state, { btn, count });
    filterBar.append(btn);
  }

  onJobEvent(onEvent);
  // Whatever happened before the stream was (re)opened is read from the table itself, empty
  // or not: a job uploaded before the first stream opened sent its events to nobody, and an
  // empty table that skipped this re-read said "No jobs yet" while the counts said 1.
  onStreamStatus((status) => {
    if (status === "live") load({ quiet: true });
  });
  setInterval(tick, 1000);

  function setHash(f) {
    const q = new URLSearchParams();
    if (f.state) q.set("state", f.state);
    if (f.parentId) q.set("parent", f.parentId);
    const qs = q.toString();
    location.hash = qs ? `#/?${qs}` : "#/";
  }

  /** Called by the router with the hash query. */
  function setFilters(params) {
    const next = { state: params.get("state") || "", parentId: params.get("parent") || "" };
    if (!STATES.includes(next.state)) next.state = "";
    const changed = next.state !== filters.state || next.parentId !== filters.parentId;
    filters = next;
    for (const [state, { btn }] of filterButtons) {
      btn.setAttribute("aria-pressed", String(state === filters.state));
    }
    if (filters.parentId) {
      fill(parentChip, "Showing the child jobs of ",
        h("a", { href: `#/jobs/${filters.parentId}` }, h("code", {}, filters.parentId)), " ",
        h("a", { href: "#/", class: "button button-quiet button-small" }, "Show all jobs"));
    }
    parentChip.hidden = !filters.parentId;
    if (changed) offPage.clear();
    if (changed || !jobs.length) {
      cursors = [];
      cursor = null;
      load();
    } else {
      // Back from a job page: deletions send no event, so re-read the page shown.
      load({ quiet: true });
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
        row = jobRow(job);
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
        !filters.state && !filters.parentId && cursors.length === 0
          ? h("span", { class: "muted" }, " Drop a file above to start one.") : null));
    }
    table.hidden = !items.length;
    const first = cursors.length === 0;
    newer.disabled = first;
    older.disabled = !next || items.length < PAGE_SIZE;
    pageLabel.textContent = `Page ${cursors.length + 1}`;
    if (first) {
      newWhileAway = 0;
      notice.hidden = true;
    }
  }

  function goOlder() {
    if (!jobs.length) return;
    cursors.push(cursor);
    cursor = jobs[jobs.length - 1].id;
    load();
    title.scrollIntoView({ block: "nearest" });
  }

  function goNewer() {
    if (!cursors.length) return;
    cursor = cursors.pop();
    load();
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
    if (cursors.length === 0) {
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
        onclick: () => { cursors = []; cursor = null; load(); } }, "Show newest"));
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
      }, () => {}).finally(() => refetching.delete(id));
    }, 100);
  }

  function scheduleCounts() {
    clearTimeout(countsTimer);
    countsTimer = setTimeout(refreshCounts, 200);
  }

  async function refreshCounts() {
    const counts = await jobCounts();
    if (!counts) return;
    let total = 0;
    for (const state of STATES) {
      total += counts[state] || 0;
      filterButtons.get(state).count.textContent = String(counts[state] || 0);
    }
    filterButtons.get("").count.textContent = String(total);
  }

  function tick() {
    if (el.closest("[hidden]")) return;
    for (const row of rows.values()) row.tick();
  }

  return { el, setFilters, reload: () => load({ quiet: true }), matches };
}

function badgeDot(state) {
  return h("span", { class: `dot dot-${state}`, "aria-hidden": "true" });
}

function jobRow(initial) {
  let job = initial;
  const stateCell = h("td", { dataset: { label: "State" }, class: "cell-state" });
  const link = h("a", { href: `#/jobs/${job.id}`, class: "job-link" });
  const fileCell = h("td", { dataset: { label: "File" }, class: "cell-file" }, link,
    h("span", { class: "muted small" }));
  const pipelineCell = h("td", { dataset: { label: "Pipeline" } });
  const bar = progressBar(`Progress of ${job.input.filename}`, 0);
  const pct = h("span", { class: "pct" });
  const progressCell = h("td", { dataset: { label: "Progress" }, class: "cell-progress" }, bar, pct);
  const attemptsCell = h("td", { dataset: { label: "Attempts" }, class: "num" });
  const createdCell = h("td", { dataset: { label: "Created" } });
  const durationCell = h("td", { dataset: { label: "Duration" }, class: "num" });
  const el = h("tr", { dataset: { jobId: job.id } }, stateCell, fileCell, pipelineCell,
    progressCell, attemptsCell, createdCell, durationCell);
  let lastState = null;

  function update(next) {
    job = next;
    el.dataset.state = job.state;
    if (job.state !== lastState) {
      fill(stateCell, badge(job.state));
      lastState = job.state;
    }
    link.textContent = job.input.filename || job.id;
    const sub = fileCell.lastChild;
    sub.textContent = ` ${formatBytes(job.input.size)}`
      + (job.error ? ` · ${job.error.code}` : "");
    pipelineCell.textContent = job.pipeline;
    const fraction = job.state === "succeeded" ? 1 : job.progress?.fraction || 0;
    setProgress(bar, fraction, job.progress?.message || job.state);
    bar.classList.toggle("bar-failed", job.state === "failed");
    bar.classList.toggle("bar-muted", job.state === "cancelled" || job.state === "queued");
    bar.hidden = fraction === 0 && (job.state === "failed" || job.state === "cancelled");
    pct.textContent = TERMINAL.has(job.state) && job.state !== "succeeded"
      ? "" : `${Math.round(fraction * 100)}%`;
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
