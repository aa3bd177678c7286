// All of the dashboard's data fetching, in one place: the charts only ever see what these
// functions return. The numbers come from /api/dashboard/summary (one call per part of the
// page, so the quick parts draw first); the downloads link to the report endpoints
// (/api/attribution…, /api/payouts, /api/fraud).

// A same-origin path with its query; empty values are left out (the API's defaults apply).
function urlOf(path, params) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value) url.searchParams.set(key, value);
  }
  return url.pathname + url.search;
}

// Signed out meanwhile (the session expired or was ended, the admin token changed): the login says so (the
// page was signed in: a refusal now means its session ended) and comes back to this period
// (never a journey's ID: the page's own URL does not hold it).
function toLogin() {
  window.location.assign(`/login?why=ended&next=${encodeURIComponent(window.location.pathname + window.location.search)}`);
  return new Error("signed out");
}

// A request of the page's. No answer at all (the gateway restarting, the network down) was
// told as the browser's "Failed to fetch"; an abort (a newer lookup) is left as it is.
async function send(url, options) {
  try {
    return await fetch(url, { credentials: "same-origin", ...options });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new Error("No answer from the gateway (restarting, or the network is down): reload the page to try again.");
  }
}

// What went wrong, from an answer that is not the API's JSON: a proxy in front of the gateway
// that timed out (504) or failed answers with its own HTML page, which was shown as
// "Unexpected token '<' … is not valid JSON".
function notJSON(response) {
  const status = `${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
  return new Error(`The server answered HTTP ${status}, not with the dashboard's data (a proxy in front of the gateway?): reload the page to try again.`);
}

async function getJSON(path, params = {}, signal = undefined) {
  const response = await send(urlOf(path, params), { headers: { Accept: "application/json" }, signal });
  if (response.status === 401) throw toLogin();
  const body = await response.json().catch(() => null);
  if (!body || typeof body !== "object") throw notJSON(response);
  if (!body.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

// How long the page waits for one part of the summary before it gives up on it. The admin API
// sets no time limit of its own on a report (a report worker that hangs is replaced after 15
// minutes), nor may a proxy in front: a report that never answered kept "Computing…" for ever.
// Far beyond any of the dashboard's (seconds, 92 days over a million touchpoints).
export const PART_SECONDS = 120;

// A part the page gave up waiting for (its request aborted); the gateway may still be at it.
export class Stalled extends Error {}

// Whole days in attribution.timezone: since inclusive, until exclusive (YYYY-MM-DD).
// Resolves to one part of /api/dashboard/summary — always {since, until, model, models,
// conversion}, and with part "counts" {conversion_names, totals, top_campaigns, top_creators, landed,
// bots, populations}, "daily" {by_day}, "models" {comparison, learnt} — which is what dashboard.js
// draws; moving to the report endpoints means assembling the same shapes here. Rejects with
// Stalled after PART_SECONDS.
export async function summary({ since, until, model, conversion, population }, part) {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), PART_SECONDS * 1000);
  try {
    return await getJSON("/api/dashboard/summary", { since, until, model, conversion, population, part }, deadline.signal);
  } catch (err) {
    if (deadline.signal.aborted) throw new Stalled(`no answer in ${PART_SECONDS} s`);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

// An ID as one path segment of the lookup's URL. A segment of "." or ".." is resolved away by
// the browser's URL parser (/api/users/.. asked for /api/), percent-encoded too ("%2E%2E": a
// dot segment to the WHATWG URL standard): the API trims the ID it is given, so a space before
// it names the same ID in a segment that is no dot segment to the browser, nor to a proxy.
function idSegment(id) {
  const trimmed = id.trim();
  return trimmed === "." || trimmed === ".." ? `%20${trimmed}` : encodeURIComponent(trimmed);
}

// The admin listener's longest request line (gateway/server.py ADMIN_MAX_HEADER, with the
// "GET " and " HTTP/1.1" around the target): an ID whose address is longer (a page's text
// pasted by mistake) was told in the listener's words, "the request target is longer than the
// listener accepts (8190 bytes)", which say nothing of the field.
const MAX_TARGET = 8190 - "GET  HTTP/1.1".length;
const WHOLE = new Intl.NumberFormat("en-US");

// kind "visitor": a visitor key, visitor ID or cookie value; kind "user": the site's user ID.
// signal: an AbortSignal, so that a newer lookup cancels this one.
export function journey(kind, id, signal = undefined) {
  const base = kind === "user" ? "/api/users/" : "/api/visitors/";
  const path = base + idSegment(id);
  if (path.length > MAX_TARGET) {
    const most = kind === "user"
      ? "a user ID has at most 256."
      : "a visitor ID has at most 2,000; from a Cookie header, paste its gw_vid=… cookie alone.";
    return Promise.reject(new Error(`Too long to look up (${WHOLE.format(id.trim().length)} characters): ${most}`));
  }
  return getJSON(path, {}, signal);
}

// A download of a report endpoint (CSV or NDJSON) for a link: same-origin, so the session
// cookie authenticates it like the page's own reads.
export const exportUrl = urlOf;

// A report download fetched by the page rather than by the browser's download manager,
// which saved nothing and said nothing when the session had ended or the API refused: a
// 401 goes to the login, as a read does; any other refusal rejects with the API's reason.
// Resolves to {name, blob}: the file name the API gives (Content-Disposition) and the file.
export async function download(url) {
  const response = await send(url);
  if (response.status === 401) throw toLogin();
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    if (!body || !body.error) throw notJSON(response);
    throw new Error(body.error);
  }
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] || "report";
  return { name, blob: await response.blob() };
}
