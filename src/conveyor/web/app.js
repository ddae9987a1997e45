// conveyor web UI: hash routing between the home page (upload + jobs) and one job's page,
// plus the banners that say when the server or its workers are not there.

import { onReachability, readiness } from "./api.js";
import { identify } from "./auth.js";
import { fill, h } from "./dom.js";
import { jobView } from "./job_view.js";
import { jobsTable } from "./jobs_table.js";
import { onStreamStatus, startLive } from "./live.js";
import { uploadPanel } from "./uploads.js";

const main = document.getElementById("main");
const banner = document.getElementById("banner");
const liveDot = document.getElementById("live-status");

const uploads = uploadPanel();
const table = jobsTable();
const home = h("div", { class: "home" }, uploads.el, table.el);
const jobRoot = h("div", { class: "job-root", hidden: true });
main.append(home, jobRoot);

let disposeJob = null;

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = hash.split("?");
  const m = path.match(/^\/jobs\/([^/]+)$/);
  if (disposeJob) {
    disposeJob();
    disposeJob = null;
  }
  if (m) {
    document.getElementById("flash").hidden = true;
    home.hidden = true;
    jobRoot.hidden = false;
    disposeJob = jobView(jobRoot, decodeURIComponent(m[1]));
    window.scrollTo(0, 0);
  } else {
    fill(jobRoot);
    jobRoot.hidden = true;
    home.hidden = false;
    document.title = "conveyor";
    table.setFilters(new URLSearchParams(query));
  }
}

// Banners: unreachable server wins over "no workers", which wins over nothing.
let reachable = true;
let workersNote = null;

function renderBanner() {
  if (!reachable) {
    banner.className = "banner banner-error";
    fill(banner, h("strong", {}, "The conveyor server cannot be reached."),
      " Showing the last known state; retrying in the background.");
    banner.hidden = false;
  } else if (workersNote) {
    banner.className = "banner banner-warn";
    fill(banner, h("strong", {}, "Jobs will wait: "), workersNote);
    banner.hidden = false;
  } else {
    banner.hidden = true;
    fill(banner);
  }
}

onReachability((ok) => {
  if (ok === reachable) return;
  reachable = ok;
  renderBanner();
  if (ok) checkReady();
});

onStreamStatus((status) => {
  liveDot.dataset.status = status;
  liveDot.textContent = status === "live" ? "Live" : status === "connecting" ? "Reconnecting…"
    : "Offline";
  if (status !== "live") checkReady();
});

let readyTimer = null;
async function checkReady() {
  clearTimeout(readyTimer);
  const r = await readiness();
  if (!r.unreachable) {
    workersNote = null;
    if (!r.ok) {
      workersNote = r.detail === "no worker process is running"
        ? "no worker process is running, so queued jobs cannot start."
        : `the server is not ready (${r.detail || "unknown reason"}).`;
    }
  }
  renderBanner();
  readyTimer = setTimeout(checkReady, reachable ? 15000 : 3000);
}

// A server that needs a key it does not have shows the sign-in form instead of the page.
if (await identify()) {
  window.addEventListener("hashchange", route);
  startLive();
  route();
  checkReady();
}
