// The API key of this browser tab: asked for when the server answers 401, kept in
// sessionStorage (gone when the tab closes), sent as `Authorization: Bearer` on every request.
// Keys never go into a URL: images and downloads of /v1/ are fetched with the header and shown
// from blob: URLs. The tenant comes from GET /v1/whoami.

import { fill, h } from "./dom.js";

const STORE = "conveyor.apiKey";

export const apiKey = () => sessionStorage.getItem(STORE);

/** Headers with the key (when signed in) added to `extra`. */
export function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

export function signOut() {
  sessionStorage.removeItem(STORE);
  location.reload();
}

async function whoami(key) {
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch("/v1/whoami", { headers, cache: "no-store" });
  return { status: response.status, body: response.ok ? await response.json() : null };
}

let asking = false;

/** Show the sign-in form instead of the page (the server answered 401). */
export function needKey(reason = "") {
  if (asking) return;
  asking = true;
  const main = document.getElementById("main");
  const error = h("p", { class: "signin-error", role: "alert", hidden: !reason }, reason);
  const input = h("input", { type: "password", id: "api-key", name: "api-key",
    autocomplete: "off", required: true, placeholder: "cvk_…", spellcheck: "false" });
  const form = h("form", { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    h("p", {}, "This conveyor server needs an API key. It is kept for this tab only."),
    h("label", { for: "api-key" }, "API key"), input, error,
    h("button", { type: "submit", class: "button button-primary" }, "Sign in"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    const got = await whoami(key).catch(() => ({ status: 0 }));
    if (got.status === 200) {
      sessionStorage.setItem(STORE, key);
      location.reload();
      return;
    }
    error.hidden = false;
    error.textContent = got.status === 401 ? "This key is not valid (unknown or revoked)."
      : "The server could not check the key; try again.";
  });
  fill(main, form);
  input.focus();
}

/**
 * Check who we are before the page starts: resolves true when the page may run (open server,
 * or a valid key), false when the sign-in form is shown instead. Shows the tenant and a
 * sign-out button in the top bar when signed in.
 */
export async function identify() {
  let got;
  try {
    got = await whoami(apiKey());
  } catch {
    return true; // unreachable: the page shows its own banner and retries
  }
  if (got.status === 401) {
    if (apiKey()) sessionStorage.removeItem(STORE);
    needKey(apiKey() === null ? "" : "Your key is no longer valid.");
    return false;
  }
  const me = got.body;
  if (me && !me.open) {
    const slot = document.getElementById("identity");
    fill(slot, h("span", { class: "tenant", title: `key ${me.key_prefix}` }, `Tenant ${me.tenant}`),
      h("button", { type: "button", class: "button button-small", id: "sign-out",
        onclick: signOut }, "Sign out"));
    slot.hidden = false;
  }
  return true;
}

/** An <img> source or link target of /v1/: with a key, fetched with the header (a blob: URL). */
export async function authedUrl(url) {
  if (!apiKey() || !url.startsWith("/v1/")) return url;
  const response = await fetch(url, { headers: authHeaders() });
  if (response.status === 401) needKey("Your key is no longer valid.");
  if (!response.ok) throw new Error(`${response.status}`);
  return URL.createObjectURL(await response.blob());
}

// Downloads: a click on a /v1/ link fetches it with the key and saves the blob.
document.addEventListener("click", async (e) => {
  const a = e.target instanceof Element ? e.target.closest("a[href^='/v1/']") : null;
  if (!a || !apiKey() || e.defaultPrevented || e.button !== 0) return;
  e.preventDefault();
  const href = await authedUrl(a.getAttribute("href"));
  const save = document.createElement("a");
  save.href = href;
  save.download = a.getAttribute("download") || "";
  if (!save.download) save.target = "_blank";
  save.click();
  setTimeout(() => URL.revokeObjectURL(href), 60_000);
});
