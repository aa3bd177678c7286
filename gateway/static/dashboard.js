// The dashboard page: reads the period from the URL, asks data.js for the numbers, draws
// them with charts.js, and answers the journey lookup. Sets <body data-state> to "ready"
// (or "error", a part failed or given up at its deadline) when it is done, which the browser
// test waits for; "loading" again while a part given up is asked again.
// Draws its charts again when their cards change width (a window resized, a phone turned).

import { PART_SECONDS, Stalled, download, exportUrl, journey, summary } from "./data.js";
import { colors, donut, groupedBars, horizontalBars, legend, stackedBars } from "./charts.js";

const $ = (selector) => document.querySelector(selector);
// Each bot verdict (gateway/events.py VERDICTS) its own colour in every period: "bot" (a known
// crawler) took one by its place among the period's verdicts, cyan beside allow alone, purple
// (the creators' bars') once a block was among them.
const VERDICT_COLORS = { allow: "#16a34a", review: "#ca8a04", block: "#dc2626", bot: "#64748b" };

function day(date) {
  return date.toISOString().slice(0, 10);
}

function addDays(text, n) {
  const date = new Date(`${text}T00:00:00Z`);
  date.setUTCDate(date.getUTCDate() + n);
  return day(date);
}

function element(tag, content, className) {
  const node = document.createElement(tag);
  if (content !== undefined) node.textContent = content;
  if (className) node.className = className;
  return node;
}

// Numbers with thousands separators, whatever the browser's language (the page is in English):
// 1,489,336.66 reads at a glance, 1489336.66 does not.
const WHOLE = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const TWO = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

function count(n) {
  return WHOLE.format(n);
}

// A count and its noun, "1 journey", "2 journeys": the demo's first sign-up is one of each,
// and the page read "From 1 journeys" and "1 touchpoint(s)".
function counted(n, noun) {
  return `${count(n)} ${noun}${n === 1 ? "" : "s"}`;
}

function fixed(n) {
  return Number.isInteger(n) ? count(n) : TWO.format(n);
}

// The currencies whose minor unit is not the cent (ISO 4217, set on <body> by the server as
// "JPY:0,KWD:3,…"): ¥5,000 is 5,000 JPY, not 5,000.00, and 1.250 KWD keeps its fils.
const MINOR_UNITS = new Map(
  (document.body.dataset.minorUnits || "").split(",").filter(Boolean).map((pair) => {
    const [code, places] = pair.split(":");
    return [code, Number(places)];
  }),
);
const FORMATS = new Map();

// Money to the currency's minor unit (the cent for most); float sums of refunds that cancel
// out are 0.00, not -0.00. A value that came without a currency (a webhook that sent none),
// which the reports credit in a row of no currency, is "50.00 (no currency)".
function money(v, currency) {
  const places = MINOR_UNITS.get((currency || "").toUpperCase()) ?? 2;
  if (!FORMATS.has(places)) {
    FORMATS.set(places, new Intl.NumberFormat("en-US", { minimumFractionDigits: places, maximumFractionDigits: places }));
  }
  return `${FORMATS.get(places).format(halfEven(v * 10 ** places) / 10 ** places + 0)} ${currency || "(no currency)"}`;
}

// The amounts of a part's rows that are told: every currency's, and those of no currency that
// hold a value (left out, the Conversion value card and the model table dropped what the
// downloads credit; a sign-up, of no value, still adds no "0.00 (no currency)").
function hasAmount(r) {
  return Boolean(r.currency || r.value);
}

// The page's one order of currencies, from a part's rows (each with currency and conversions):
// the currency of the most conversions first, ties by code. The amounts came as the API's rows
// did: the totals by the first day each was credited on, a model table's cell by amount, so
// that one currency stood first in one cell and second in the next.
function currencyOrder(rows) {
  const n = new Map();
  for (const r of rows) if (r.currency) n.set(r.currency, (n.get(r.currency) || 0) + r.conversions);
  const order = [...n.keys()].sort((a, b) => n.get(b) - n.get(a) || (a < b ? -1 : a > b ? 1 : 0));
  return new Map([...order.map((c, i) => [c, i]), [null, order.length]]); // no currency last
}

// Rounded to a whole number as the reports round (half to even: 2.5 is 2, 3.5 is 4).
function halfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 ? r - 1 : r;
}

// The report time zone (attribution.timezone, set on <body> by the server): the dashboard's
// days and times are that zone's, whatever the browser's own.
const ZONE = document.body.dataset.timezone || "UTC";
const DAY = { year: "numeric", month: "2-digit", day: "2-digit" };
const MINUTE = { ...DAY, hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZoneName: "shortOffset" };
const TIME = { ...MINUTE, second: "2-digit" };

// A moment as "YYYY-MM-DD" (or "YYYY-MM-DD HH:MM" with MINUTE, "YYYY-MM-DD HH:MM:SS" with TIME)
// in the report time zone.
function inZone(date, fields) {
  const parts = new Intl.DateTimeFormat("en-CA", { timeZone: ZONE, ...fields }).formatToParts(date);
  const part = (type) => parts.find((p) => p.type === type)?.value;
  const day = `${part("year")}-${part("month")}-${part("day")}`;
  if (fields === DAY) return day;
  // With its offset outside UTC: the hour repeated when the clocks go back is two moments.
  const offset = ZONE === "UTC" ? "" : ` ${part("timeZoneName")}`;
  const second = fields === TIME ? `:${part("second")}` : "";
  return `${day} ${part("hour")}:${part("minute")}${second}${offset}`;
}

function today() {
  return inZone(new Date(), DAY);
}

// A stored time (ISO 8601 UTC, with microseconds) to the second in the report time zone, as
// the charts count its day; the API's text as it is if it is not one.
function localTime(ts) {
  const date = new Date(`${ts.slice(0, 19)}Z`);
  return Number.isNaN(date.getTime()) ? ts : inZone(date, TIME);
}

function readPeriod() {
  const params = new URLSearchParams(window.location.search);
  // A date written as the form writes one; anything else is as if not given. A year of five or
  // six digits (the date field takes years up to 275760: a digit too many typed) is kept, to be
  // told outside the days shown, and so is a day the calendar has not (2026-11-31, a link made for
  // "the month's last day"), to be told (periodProblem): both were taken as no date given, the
  // default period shown without a word (to=2026-11-31: 1 November to today).
  // From not given is counted back from To, but from no day the calendar has: a month 13 or a
  // day 00 is no date to the browser, and counting back from it threw, the page left loading
  // without a word (to=2026-13-01); From is left empty then, To told (periodProblem).
  const valid = (v) => /^\d{4,6}-\d\d-\d\d$/.test(v || "");
  const to = valid(params.get("to")) ? params.get("to") : today();
  const counted = () => (noSuchDay(to) ? "" : addDays(to, -29));
  const from = valid(params.get("from")) ? params.get("from") : to.length > 10 ? to : counted();
  return {
    from,
    to,
    model: params.get("model") || "linear",
    conversion: params.get("conversion") || "",
    population: params.get("population") || "",
  };
}

// Names in the order of their numbers: Region 2 before Region 10 (as text, Region 10 came
// between Region 1 and Region 2).
const byName = new Intl.Collator("en", { numeric: true }).compare;

// Channels ordered by their total, largest first (ties by name), so colours and stacks stay stable.
function rank(rows, key) {
  const totals = new Map();
  for (const row of rows) totals.set(row[key], (totals.get(row[key]) || 0) + row.conversions);
  return [...totals.entries()].sort((a, b) => b[1] - a[1] || byName(a[0], b[0])).map(([name]) => name);
}

// What the "Conversion value" card says when the daily part, whose credits it sums, did not
// come: it read "–", as for a period without any value.
const NO_VALUE = {
  failed: "not computed: the credits failed (see above)",
  stalled: "not computed yet: see the daily chart",
};

// counts: the "counts" part of the summary; daily: its "daily" part (the value credited
// under the chosen model, per currency, is the sum of its days), or null when it did not come
// (dailyState "failed" or "stalled"); population: the one credited, if one is chosen.
function renderTotals(counts, daily, dailyState, population) {
  const box = $("#totals");
  box.replaceChildren();
  const value = new Map();
  for (const row of daily ? daily.by_day : []) {
    if (hasAmount(row)) value.set(row.currency || null, (value.get(row.currency || null) || 0) + row.value);
  }
  // Each amount whole on its line (a card too narrow for it broke 1,234,567.89 EUR after
  // "1,234,567.8"): the line breaks between amounts, and the card is as wide as the widest.
  const order = currencyOrder(daily ? daily.by_day : []);
  const amounts = daily
    ? [...value.entries()].sort(([a], [b]) => order.get(a) - order.get(b)).flatMap(([cur, v], i) => [...(i ? [" · "] : []), element("span", money(v, cur), "amount")])
    : [NO_VALUE[dailyState]];
  if (!amounts.length) amounts.push("–");
  // With a population, the conversions its touchpoints reach: those the charts credit (every
  // population's beside them read 7 over a comparison of "No conversions in this period.").
  const { conversions, population_conversions: reached } = counts.totals;
  const named = [counts.conversion, population && `credited to ${population}`].filter(Boolean).join(", ");
  const left = counts.totals.not_credited;
  const uncredited = left ? `+${count(left)} not credited (bot verdict)` : undefined;
  const ofAll = population && reached !== undefined ? `of ${count(conversions)} in every population` : undefined;
  for (const [label, shown, className, note] of [
    // The landings the reports credit; those of a bot verdict they do not, said under them
    // (the bot share counts every landing).
    ["Touchpoints", count(counts.totals.touchpoints), undefined, uncredited],
    ["Visitors", count(counts.totals.visitors)],
    [named ? `Conversions (${named})` : "Conversions", count(ofAll ? reached : conversions), undefined, ofAll],
    // Not computed: said in words, smaller than a number.
    [population ? `Conversion value (credited to ${population})` : "Conversion value", amounts, daily ? undefined : "missing"],
  ]) {
    const card = element("div", undefined, Array.isArray(shown) ? "total value" : "total");
    const strong = element("strong", undefined, className);
    strong.append(...[shown].flat());
    card.append(element("span", label, "label"), strong);
    if (note) card.appendChild(element("span", note, "note"));
    box.appendChild(card);
  }
}

// Each chart drawn, with what draws it again: a chart is drawn for its card's width (charts.js
// widthFor), and a card that changes width (a phone turned, a window widened or narrowed) has
// it drawn again for the new one; it was only scaled: a chart drawn on a phone upright was 2.3
// times its size once the phone was turned, one drawn on a desktop a third of it in a window
// narrowed to a phone's width.
const charts = new Map();

function draw(selector, redraw) {
  charts.set(selector, { redraw, width: $(selector).clientWidth });
  redraw();
}

let resizing = false;
window.addEventListener("resize", () => {
  if (resizing) return;
  resizing = true;
  requestAnimationFrame(() => {
    resizing = false;
    for (const [selector, chart] of charts) {
      const width = $(selector).clientWidth;
      if (width === chart.width) continue;
      chart.width = width;
      chart.redraw();
    }
  });
});

// What a card with nothing to draw says of a period wholly after today (in the report time
// zone, whose days the period counts): that it has not begun — "No conversions in this period."
// read as a period that had passed without any. Undefined for a period begun.
function notYet(since) {
  const now = today();
  return since > now ? `This period has not begun: it starts on ${since}, and today is ${now} in ${ZONE}.` : undefined;
}

// What the daily chart and the comparison say with nothing to draw: with a population chosen,
// that none of the period's conversions is credited to it ("No conversions in this period."
// read over a card counting the period's conversions, "0 of 441 in every population").
function uncredited(data) {
  return notYet(data.since)
    ?? (data.population ? `No conversion of the period is credited to ${data.population} touchpoints.` : undefined);
}

function renderDaily(data) {
  // The API's days, not every calendar date from since to until: a date the zone skipped
  // whole (Pacific/Apia went from 2011-12-29 to 12-31) was drawn as an empty day.
  const days = data.days;
  const channels = rank(data.by_day, "channel");
  // Each built-in channel its own colour in every period (set on <body> by the server); an
  // operator's own channels get colours made for them, in the period's order.
  const palette = colors(channels, (document.body.dataset.channels || "").split(","));
  const series = channels.map((name) => {
    const values = days.map(() => 0);
    for (const row of data.by_day) if (row.channel === name) values[days.indexOf(row.day)] += row.conversions;
    return { name, values };
  });
  draw("#chart-daily", () => stackedBars($("#chart-daily"), { categories: days, series, palette, label: "Conversions by channel per day (each day's numbers: the table below, The chart's numbers)", unit: "conversions", emptyText: uncredited(data) }));
  // A legend only for bars drawn: under the empty state, a key to nothing.
  const drawn = series.some((s) => s.values.some((v) => v));
  legend($("#legend-daily"), drawn ? channels.map((label) => ({ label, color: palette.get(label) })) : []);
  dailyTable(days, series);
}

// The daily chart's numbers, each day's credited conversions per channel, for reading them
// without hovering over every bar (and for a screen reader): folded under the chart.
function dailyTable(days, series) {
  const table = $("#table-daily");
  $("#numbers-daily").hidden = !series.length;
  const head = element("tr");
  head.append(element("th", "Day"), ...series.map((s) => element("th", s.name)), element("th", "Total"));
  table.replaceChildren(element("thead"), element("tbody"));
  table.tHead.appendChild(head);
  days.forEach((day, i) => {
    const values = series.map((s) => s.values[i]);
    const total = values.reduce((sum, v) => sum + v, 0);
    if (!total) return;
    const tr = element("tr");
    const dayCell = element("th", day);
    dayCell.scope = "row";
    tr.append(dayCell, ...values.map((v) => element("td", v ? fixed(v) : "–")), element("td", fixed(total)));
    table.tBodies[0].appendChild(tr);
  });
}

function renderModels(data) {
  const channels = rank(data.comparison.filter((r) => r.model === data.model), "channel");
  for (const name of rank(data.comparison, "channel")) if (!channels.includes(name)) channels.push(name);
  const palette = colors(data.models);
  const series = data.models.map((model) => ({
    name: model,
    values: channels.map((ch) =>
      data.comparison.filter((r) => r.model === model && r.channel === ch).reduce((s, r) => s + r.conversions, 0)),
  }));
  draw("#chart-models", () => groupedBars($("#chart-models"), { groups: channels, series, palette, label: "Model comparison by channel (the numbers: the table below)", unit: "conversions", emptyText: uncredited(data) }));
  // Nothing to compare, the empty state alone: the legend listed all 8 models under it.
  const compared = channels.length && series.some((s) => s.values.some((v) => v));
  legend($("#legend-models"), compared ? data.models.map((label) => ({ label, color: palette.get(label) })) : []);
  if (data.learnt) renderLearnt(data.learnt, palette.get("data_driven"), data.population, data.since);

  const table = $("#table-models");
  table.replaceChildren();
  const order = currencyOrder(data.comparison);
  if (!channels.length) return; // the chart says "No conversions in this period."
  const head = element("tr");
  head.append(element("th", "Channel"), ...data.models.map((m) => element("th", m)));
  table.append(element("thead"), element("tbody"));
  table.tHead.appendChild(head);
  for (const ch of channels) {
    const tr = element("tr");
    tr.appendChild(element("th", ch));
    for (const model of data.models) {
      const rows = data.comparison.filter((r) => r.model === model && r.channel === ch);
      const n = rows.reduce((s, r) => s + r.conversions, 0);
      const amounts = rows.filter(hasAmount).sort((a, b) => order.get(a.currency || null) - order.get(b.currency || null)).map((r) => money(r.value, r.currency)).join(", ");
      const td = element("td", rows.length ? fixed(n) : "–");
      if (amounts) td.appendChild(element("small", amounts));
      tr.appendChild(td);
    }
    table.tBodies[0].appendChild(tr);
  }
}

const PERCENT = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });

// When the weights were learnt, to the minute, in the report time zone as a journey's times
// (it was told in UTC beside them), the zone named: they are kept between reports for a few
// minutes (admin.data_driven_reuse_seconds), so a page drawn later may show older ones.
function learntWhen(at) {
  const date = at ? new Date(at) : null;
  if (!date || Number.isNaN(date.getTime())) return "";
  return ` Learnt ${inZone(date, MINUTE)}${ZONE === "UTC" ? " UTC" : ` (${ZONE})`}.`;
}

// learnt: what data_driven learnt from the period's journeys (the models part's `learnt`, as
// /api/attribution?model=data_driven says it), so that an analyst comparing the models sees
// why its credits differ: the journeys counted, and each channel's weight (the share of a
// conversion its touches get) as a bar in data_driven's colour, its removal effect beside it;
// folded under them, the numbers to six decimals in a table.
// population: the one chosen, whose journeys alone it learnt from (said: "From 0 journeys of the
// period" and "No journeys in this period" read over a period of hundreds).
function renderLearnt(learnt, color, population, since) {
  $("#learnt").hidden = false;
  const { converting_journeys: converting, non_converting_journeys: other } = learnt;
  // The largest weight first, as the API gives them; those of one weight by name.
  const channels = [...learnt.channels].sort((a, b) => b.weight - a.weight || byName(a.channel, b.channel));
  const whose = population ? ` of ${population} touchpoints in the period` : " of the period";
  const said = `From ${counted(converting + other, "journey")}${whose}: ${count(converting)} converting, ${count(other)} not converting.`;
  let why = "";
  if (converting) why = " A channel's weight is the share of a conversion its touches get: its removal effect (how much the chance of converting drops without it) over the sum of them.";
  else if (channels.length) why = " None converted: every removal effect and weight is 0.";
  // No journeys: the chart says so alone (until 2026-12-07 "From 0 journeys of the period: 0
  // converting, 0 not converting." stood over "No journeys in this period: …").
  const note = $("#learnt-note");
  note.hidden = !(converting + other);
  note.textContent = converting + other ? said + why + learntWhen(learnt.learnt_at) : "";
  const most = Math.max(...channels.map((c) => c.weight), 0);
  const rows = channels.map((c) => {
    const weight = `${PERCENT.format(c.weight * 100)} %`;
    const effect = c.removal_effect.toFixed(3);
    return {
      label: c.channel,
      value: most ? c.weight / most : 0,
      note: `${weight} · effect ${effect}`,
      spoken: `weight ${weight}, removal effect ${effect}`,
    };
  });
  draw("#chart-learnt", () => horizontalBars($("#chart-learnt"), { rows, color, label: "What data_driven learnt, each channel's weight and removal effect (the numbers: the table below)", emptyText: notYet(since) ?? `No journeys${population ? ` of ${population} touchpoints` : ""} in this period: data_driven learnt nothing.` }));
  const table = $("#table-learnt");
  $("#numbers-learnt").hidden = !channels.length;
  table.replaceChildren(element("thead"), element("tbody"));
  const head = element("tr");
  head.append(element("th", "Channel"), element("th", "Weight"), element("th", "Removal effect"));
  table.tHead.appendChild(head);
  for (const c of channels) {
    const tr = element("tr");
    const name = element("th", c.channel);
    name.scope = "row";
    tr.append(name, element("td", c.weight.toFixed(6)), element("td", c.removal_effect.toFixed(6)));
    table.tBodies[0].appendChild(tr);
  }
}

// rows: the period's most landed campaigns (or creators), of `landed` in all, ranked by the
// landings the reports credit (attribution.verdicts): the card's note says when the chart shows
// only some of them (a shop of a thousand campaigns read as one of ten, with nothing to tell the
// ten were the first of many), and how many landings it leaves out (a bot verdict not credited:
// a click farm's blocked clicks ranked its creator first); each row, its own.
function renderTop(selector, rows, color, what, landed, uncredited, since) {
  const note = $(`${selector}-note`);
  const said = [];
  if (landed > rows.length) said.push(`The ${count(rows.length)} most landed of ${count(landed)} ${what} in the period.`);
  if (uncredited) {
    const verdicts = CREDITED_VERDICTS.join(", ");
    said.push(`Landings the reports credit (bot verdict ${verdicts}): ${count(uncredited)} more, with another verdict, ${uncredited === 1 ? "is" : "are"} left out.`);
  }
  note.hidden = !said.length;
  note.textContent = said.join(" ");
  // Those landed on alike by name, as the channels are (the API ranks them so too; until
  // 2026-12-07 as text: Region 10 before Region 2).
  const ranked = [...rows].sort((a, b) => b.touchpoints - a.touchpoints || byName(a.name, b.name));
  const bars = ranked.map((r) => {
    const left = r.not_credited ? ` · +${count(r.not_credited)} not credited` : "";
    const spokenLeft = r.not_credited ? `, ${count(r.not_credited)} more landing${r.not_credited === 1 ? "" : "s"} not credited` : "";
    return {
      label: r.name,
      value: r.touchpoints,
      note: `${count(r.touchpoints)} · ${count(r.visitors)} vis · ${count(r.conversions)} conv${left}`,
      spoken: `${counted(r.touchpoints, "landing")}, ${counted(r.visitors, "visitor")}, ${counted(r.conversions, "conversion")}${spokenLeft}`,
    };
  });
  draw(selector, () => horizontalBars($(selector), { rows: bars, color, label: `Top ${what}`, emptyText: notYet(since) ?? `No ${what} in this period.` }));
}

function renderBots(data) {
  const names = Object.keys(data.bots.verdicts).sort();
  const parts = names.map((label) => ({
    label,
    value: data.bots.verdicts[label],
    color: VERDICT_COLORS[label] || "#0891b2", // a verdict of a later version
  }));
  donut($("#chart-bots"), { parts, label: "Bot share", emptyText: notYet(data.since) ?? "No touchpoints in this period." });
  legend($("#legend-bots"), parts.map((p) => ({ label: `${p.label}: ${count(p.value)}`, color: p.color })));
  // A period without touchpoints says nothing about whether bot scoring is installed.
  $("#bots-note").textContent = data.bots.scored || !names.length
    ? "Touchpoints of the period by bot verdict."
    : "Bot scoring is not installed: every touchpoint counts as allow.";
}

// The bot verdicts the models credit (attribution.verdicts, set on <body> by the server; a
// touchpoint without a verdict counts as allow).
const CREDITED_VERDICTS = (document.body.dataset.creditedVerdicts || "allow").split(",");

// A touchpoint's bot verdict as the journey tells it: one the models do not credit says so,
// with its reasons (a creator's flagged click, which earned nothing, read as any other).
function verdictOf(t) {
  const verdict = t.verdict || "allow";
  const analyst = t.verdict_origin === "analyst" ? ["set by an analyst"] : [];
  if (CREDITED_VERDICTS.includes(verdict)) return analyst.length ? `${verdict} (${analyst[0]})` : t.verdict || "–";
  const why = [...(t.reasons || []), ...analyst];
  return `${verdict}, not credited${why.length ? `: ${why.join(", ")}` : ""}`;
}

function journeyTable(touchpoints) {
  const table = element("table");
  const head = element("tr");
  for (const h of [`Time (${ZONE})`, "Channel", "Source / medium", "Campaign", "Creator", "Landing", "Bot verdict"]) head.appendChild(element("th", h));
  table.appendChild(element("thead")).appendChild(head);
  const body = table.appendChild(element("tbody"));
  for (const t of touchpoints) {
    const tr = element("tr");
    for (const cell of [
      localTime(t.ts),
      t.channel || "–",
      [t.source, t.medium].filter(Boolean).join(" / ") || t.referrer_host || "–",
      t.campaign || "–",
      t.creator_id || "–",
      t.landing_path,
      verdictOf(t),
    ]) tr.appendChild(element("td", cell));
    body.appendChild(tr);
  }
  return table;
}

// Under a card: links that download its report for the period, as CSV (comma- or
// semicolon-separated) or NDJSON. A click fetches the file, saying so while the report is
// computed (seconds over a large store) and why when it failed; the link's address stays the
// report's, to copy or open.
function exportLinks(selector, what, path, params) {
  const box = $(selector);
  const status = element("span", "", "hint");
  status.setAttribute("role", "status");
  box.replaceChildren(element("span", `${what}: `));
  // A CSV for a spreadsheet: with a byte order mark, Excel opened by a double click reads
  // it as UTF-8 (without, café shows as cafÃ©). "CSV (;)": its cells separated by semicolons,
  // for Excel where the list separator is ";" (German, French, Dutch, Italian, Spanish),
  // which puts each comma-separated row into one column.
  const csv = { format: "csv", bom: "true" };
  for (const [label, asked, said] of [
    ["CSV", csv, "CSV"],
    ["CSV (;)", { ...csv, delimiter: "semicolon" }, "CSV separated by semicolons"],
    ["NDJSON", { format: "ndjson" }, "NDJSON"],
  ]) {
    const link = element("a", label);
    link.href = exportUrl(path, { ...params, ...asked });
    link.setAttribute("download", "");
    link.setAttribute("aria-label", `${what} as ${said}`);
    link.addEventListener("click", (event) => {
      // A click with a modifier or another button opens the address, as the browser does.
      if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      if (link.dataset.pending) return; // one download of a report at a time, not a second computation
      save(link, status);
    });
    box.append(link, " ");
  }
  box.append(status);
}

async function save(link, status) {
  link.dataset.pending = "1";
  status.className = "hint";
  status.textContent = "preparing…";
  try {
    const { name, blob } = await download(link.href);
    const file = element("a");
    file.href = URL.createObjectURL(blob);
    file.download = name;
    document.body.append(file);
    file.click();
    file.remove();
    setTimeout(() => URL.revokeObjectURL(file.href), 60_000);
    delete link.dataset.pending;
    // Done, unless another of the card's links is still preparing (or failed: that stays said).
    if (status.className === "hint" && !link.parentElement.querySelector("a[data-pending]")) status.textContent = "";
  } catch (err) {
    delete link.dataset.pending;
    status.className = "error";
    status.textContent = `not downloaded: ${err.message}`;
  }
}

// population: the one chosen, or "": only the reports take it (attribution, time series,
// payouts), not the fraud report nor the listings.
function renderExports(data, population) {
  const period = { since: data.since, until: data.until, conversion: data.conversion, population };
  exportLinks("#export-daily", "Download per day", "/api/attribution/timeseries", { model: data.model, ...period });
  exportLinks("#export-models", "Download every model", "/api/attribution", { model: "all", ...period });
  const credits = { model: data.model, ...period };
  exportLinks("#export-campaigns", `Credits by campaign (${data.model})`, "/api/attribution", { ...credits, group_by: "campaign" });
  exportLinks("#export-creators", `Credits by creator (${data.model})`, "/api/attribution", { ...credits, group_by: "creator_id" });
  // Payouts under the model the payout rules name ([payouts] model), whatever the page shows.
  exportLinks("#export-payouts", "Creator payouts", "/api/payouts", period);
  // What to approve: the payouts' totals per currency, one line each (the rows summed).
  exportLinks("#export-payout-totals", "Payouts to approve (totals)", "/api/payouts", { ...period, table: "totals" });
  // The fraud report: every creator's clicks by verdict, with the reasons (all conversions alike).
  exportLinks("#export-fraud", "Clicks by verdict per creator", "/api/fraud", { since: data.since, until: data.until });
  // The period's raw rows, for a spreadsheet or a BI tool (the listings' downloads).
  const raw = { since: data.since, until: data.until };
  exportLinks("#export-touchpoints", "Every touchpoint of the period", "/api/touchpoints", raw);
  // One conversion name chosen, the download holds that name's alone: the label says so.
  const named = data.conversion ? { ...raw, name: data.conversion } : raw;
  const which = data.conversion ? `Every ${data.conversion} conversion of the period` : "Every conversion of the period";
  exportLinks("#export-conversions", which, "/api/conversions", named);
}

// The lookup under way: a newer one cancels it. A slow answer (a user of many devices) came
// after a quicker one asked later, and replaced it: the journey shown was not the ID in the field.
let looking = null;

async function lookup(event) {
  event.preventDefault();
  const form = event.target;
  const out = $("#journey-result");
  looking?.abort();
  const mine = new AbortController();
  looking = mine;
  if (!form.identifier.value.trim()) {
    out.replaceChildren(element("p", "Enter a visitor ID or cookie value, or a user ID.", "error"));
    return;
  }
  out.replaceChildren(element("p", "Looking up…", "hint"));
  try {
    const found = await journey(form.kind.value, form.identifier.value, mine.signal);
    if (looking !== mine) return;
    out.replaceChildren();
    const key = found.user_key || found.visitor_key;
    const devices = found.visitors ? ` · ${counted(found.visitors.length, "device")}` : "";
    // A journey lists its first touchpoints only (storage/queries.py JOURNEY_LIMIT): say so.
    const shown = found.touchpoints.length;
    // A visitor's conversions without a landing (it came direct): no touchpoint to list.
    let touches = shown ? counted(shown, "touchpoint") : "no touchpoints recorded";
    if (found.truncated) {
      const of = found.touch_count ? ` of ${found.touch_count}` : "";
      touches = `the first ${shown}${of} touchpoints (there are more; the last touch is the latest)`;
    }
    // Looked up by the user key a journey or the conversions download shows: said, as the
    // same text could be a raw ID (an erasure takes the raw ID alone).
    const byKey = found.looked_up_as === "user_key" ? " · found by its user key" : "";
    out.appendChild(element("p", `${key} · ${touches}${devices}${byKey}`, "hint"));
    if (found.first_touch) {
      out.appendChild(element("p", `First touch: ${found.first_touch.channel || "–"} · last touch: ${found.last_touch.channel || "–"}`));
    }
    // Six columns are wider than a phone: the table scrolls in its card, not the page (its box,
    // then a stop of the Tab key, named for a screen reader).
    if (shown) {
      const scroll = out.appendChild(element("div", undefined, "scroll"));
      scroll.setAttribute("role", "region");
      scroll.setAttribute("aria-label", "The journey's touchpoints");
      scroll.appendChild(journeyTable(found.touchpoints));
    }
    if (found.conversions && found.conversions.length) {
      // Its earliest conversions only, as its touchpoints (JOURNEY_LIMIT): said in the heading.
      const cut = found.conversions_truncated;
      out.appendChild(element("h3", cut ? `Conversions (the first ${found.conversions.length}; there are more)` : "Conversions"));
      const list = element("ul");
      for (const c of found.conversions) {
        const value = c.value === null || c.value === undefined ? "–" : money(c.value, c.currency);
        list.appendChild(element("li", `${localTime(c.ts)} · ${c.name} · ${value}`));
      }
      out.appendChild(list);
    }
  } catch (err) {
    if (looking === mine) out.replaceChildren(element("p", err.message, "error"));
  }
}

// Each population's landings of the period after its name in the form's list (the summary's
// "populations"; the names are cut in the closed list, their meaning after the count), and
// the landings of visitors who asked not to be tracked (GPC, DNT: counted, no touchpoint to
// credit) as a line that cannot be chosen.
function populationCounts(select, populations) {
  const landings = (n) => `${count(n)} landing${n === 1 ? "" : "s"}`;
  for (const option of select.options) {
    if (!option.value || option.dataset.aggregate !== undefined) continue;
    option.dataset.meaning ??= option.textContent.split(" — ")[1];
    const n = populations[option.value] || 0;
    option.textContent = `${option.value} (${landings(n)}) — ${option.dataset.meaning}`;
  }
  select.querySelector("option[data-aggregate]")?.remove();
  if (populations.aggregate) {
    const counted = new Option(`not tracked (${landings(populations.aggregate)}) — GPC or DNT, counted only`, "aggregate");
    counted.disabled = true;
    counted.dataset.aggregate = "";
    select.appendChild(counted);
  }
}

function fillForm(form, data) {
  form.model.replaceChildren(...data.models.map((model) => new Option(model, model, false, model === data.model)));
  const names = data.conversion_names;
  const options = names.map((name) => new Option(name, name, false, name === data.conversion));
  // A name none of the period's conversions has (a typo in the address, `?conversion=purchse`,
  // or a name of other periods): the charts count none of it. It read as one of the period's
  // names over empty charts; it is told, and its option says it (still the one charted, so
  // that Show with other dates keeps it).
  const absent = data.conversion && !names.includes(data.conversion);
  if (absent) options.push(new Option(`${data.conversion} (none in this period)`, data.conversion, false, true));
  form.conversion.replaceChildren(form.conversion.options[0], ...options); // every conversion first
  const note = $("#conversion-note");
  note.hidden = !absent;
  note.textContent = absent
    ? `No conversion of the period is named "${data.conversion}": the charts and totals count none. `
      + (names.length ? `The period's conversions: ${names.join(", ")}.` : "The period has no conversions.")
    : "";
  for (const node of document.querySelectorAll("[data-model]")) node.textContent = data.model;
  populationCounts(form.population, data.populations);
}

// The name the address asked for out of the form's list, every conversion chosen instead.
function dropConversion(form, name) {
  for (const option of [...form.conversion.options]) if (option.value && option.value === name) option.remove();
  form.conversion.value = "";
}

// What is wrong with the period, in the form's own words, before the API is asked: the API
// speaks of since and until (the day after To), which the form does not show.
// Why a date of the form's shape (YYYY-MM-DD) is no day of the calendar ("no month 13",
// "November 2026 has 30 days"), or "" for a day it has. A year of five or six digits is
// periodProblem's to tell (outside the days shown).
function noSuchDay(text) {
  const match = /^(\d{4})-(\d\d)-(\d\d)$/.exec(text);
  if (!match) return "";
  const [year, month, dayOfMonth] = match.slice(1).map(Number);
  if (month < 1 || month > 12) return `no month ${match[2].replace(/^0/, "")}`;
  const last = new Date(Date.UTC(2000, month, 0));
  last.setUTCFullYear(year, month, 0); // the month's last day, in any year (0099 too)
  const days = last.getUTCDate();
  if (dayOfMonth >= 1 && dayOfMonth <= days) return "";
  const name = new Date(Date.UTC(2000, month - 1, 1)).toLocaleString("en", { month: "long", timeZone: "UTC" });
  return `${name} ${match[1]} has ${days} days`;
}

function periodProblem({ from, to, model, population }) {
  // A model the gateway does not know (a bookmark's `?model=Linear`): said by the API as
  // "model: expected one of first_touch, …, got 'Linear'", in its own terms.
  const models = document.body.dataset.models.split(",");
  if (!models.includes(model)) {
    return `Model "${model}" is not one the dashboard knows: choose ${models.join(", ")}.`;
  }
  // A population the form does not offer (the API's words named its parameter).
  const offered = [...$("#period").population.options].map((o) => o.value).filter(Boolean);
  if (population && !offered.includes(population)) {
    return `Population "${population}" is not one the dashboard knows: choose every population, or ${offered.join(", ")}.`;
  }
  // A day the calendar has not, said as the API says it of since and until.
  for (const [name, value] of [["From", from], ["To", to]]) {
    const wrong = noSuchDay(value);
    if (wrong) return `${name} (${value}) is no day of the calendar: ${wrong}.`;
  }
  // The days the API counts in attribution.timezone (gateway/dashboard.py _zone_days, set by the server): a
  // year 1900 or 9999-12-31 was refused in the API's words (until '+010000-01').
  const { firstDay, lastDay } = document.body.dataset;
  // Compared as text, a longer year first (20261-11-01 sorted before 9999-12-30).
  const before = (a, b) => a.length < b.length || (a.length === b.length && a < b);
  if (before(from, firstDay) || before(lastDay, to) || from.length > 10) {
    return `The dashboard shows days from ${firstDay} to ${lastDay}: choose a From and a To between them.`;
  }
  if (from > to) return `From (${from}) is after To (${to}): choose a From on or before To.`;
  const days = (Date.parse(to) - Date.parse(from)) / 86400000 + 1;
  const most = Number(document.body.dataset.maxDays); // storage/dashboard.py MAX_DAYS, set by the server
  if (days > most) {
    return `From ${from} to ${to} is ${days} days: the dashboard shows at most ${most}. `
      + "Shorten the period, or use the reports (gateway report, /api/attribution) for a longer one.";
  }
  return "";
}

// Where each part of the summary says it gave up waiting, and what it is called there.
const PARTS = {
  counts: { home: "#totals", name: "The period's counts (totals, top tables, bot share)" },
  daily: { home: "#chart-daily", name: "The daily chart" },
  models: { home: "#chart-models", name: "The model comparison" },
};

// The cards each part draws, which say so while it is computed: they were blank, the model
// comparison (the slowest part, seconds over a million touchpoints) for seconds under the fold,
// where the status line at the top of the page was out of sight. Once the part failed or was
// given up, those still waiting say what became of it.
const WAITING = {
  counts: ["#chart-campaigns", "#chart-creators", "#chart-bots"],
  daily: ["#chart-daily"],
  models: ["#chart-models"],
};

// Each of the part's cards (but `skip`, which says something of its own) that holds nothing
// drawn yet — empty, or still waiting — now says `text`.
function waiting(part, text, className, skip = "") {
  for (const selector of WAITING[part]) {
    const box = $(selector);
    if (selector === skip || (box.firstElementChild && !box.firstElementChild.hasAttribute("data-waiting"))) continue;
    const note = element("p", text, className);
    note.dataset.waiting = "";
    box.replaceChildren(note);
  }
}

// A part with no answer after PART_SECONDS: its card says so, with a button that asks again
// (once: it is gone as soon as it is pressed, so a second press sends nothing).
function stalled(part, retry) {
  const box = $(PARTS[part].home);
  const say = element("p", `${PARTS[part].name}: no answer in ${PART_SECONDS} s, the page gave up waiting. `
    + "The gateway may still be computing it (or a report worker hung); asked again, it answers with that report when it is done. ", "error");
  const again = element("button", "Try again");
  again.type = "button";
  again.addEventListener("click", () => {
    box.replaceChildren(element("p", `${PARTS[part].name}: computing again…`, "hint"));
    // The button gone, the keyboard's focus stays in its card (it fell to the top of the page).
    box.tabIndex = -1;
    box.focus();
    retry();
  }, { once: true });
  say.appendChild(again);
  box.replaceChildren(say);
}

// The page's three parts are asked for separately and drawn as they come: the counts and the
// daily chart take a second or two over a million touchpoints, the model comparison (every
// model, data_driven learning from the whole period) several. It is asked for once the daily
// chart's credits are done: the gateway computes one report at a time. Each part has a
// deadline of its own (data.js PART_SECONDS), past which it is given up, its request aborted.
async function main() {
  const period = readPeriod();
  const form = $("#period");
  form.from.value = period.from;
  form.to.value = period.to;
  // Before the API answers (or when it refuses the period), the form already holds every model
  // (set on <body> by the server), the conversion and the population asked for: sent again, the
  // dates corrected after an error, it keeps them; a model it does not know is offered as
  // linear, a population it does not know as every population.
  const known = document.body.dataset.models.split(",");
  const model = known.includes(period.model) ? period.model : "linear";
  form.model.replaceChildren(...known.map((name) => new Option(name, name, false, name === model)));
  if (period.conversion) form.conversion.appendChild(new Option(period.conversion, period.conversion, false, true));
  form.population.value = period.population;
  if (form.population.value !== period.population) form.population.value = "";
  // The lookup form comes disabled: sent by the browser itself (before this script runs, or
  // without it) it would put the raw user ID in the page's URL, and so in the browser's history
  // and session files. Its ID field is autocomplete="off": not kept among saved form entries.
  const lookupForm = $("#journey");
  lookupForm.addEventListener("submit", lookup);
  for (const control of lookupForm.elements) control.disabled = false;
  // The field's hint and its name for a screen reader follow the kind of ID chosen: a user is
  // found by the site's own ID (the demo shop's e-mail), not by a cookie. Set now too: the
  // browser may have restored the kind of a previous visit (back, forward).
  const kinds = {
    visitor: [lookupForm.identifier.placeholder, "Visitor ID or cookie value"],
    user: ["e.g. the e-mail or account ID the site knows the user by", "User ID or user key"],
  };
  const fitKind = () => {
    const [hint, name] = kinds[lookupForm.kind.value] || kinds.visitor;
    lookupForm.identifier.placeholder = hint;
    lookupForm.identifier.setAttribute("aria-label", name);
  };
  lookupForm.kind.addEventListener("change", fitKind);
  fitKind();
  const status = $("#status");
  const problem = periodProblem(period);
  if (problem) {
    status.textContent = problem;
    status.className = "error";
    document.body.dataset.state = "error";
    return;
  }
  const { population } = period;
  const credited = population ? `, crediting ${population} touchpoints only` : "";
  for (const node of document.querySelectorAll("[data-population]")) node.textContent = credited;
  const ask = {
    since: period.from,
    until: addDays(period.to, 1),
    model: period.model,
    conversion: period.conversion,
    population,
  };
  const computing = status.textContent;
  for (const part of Object.keys(WAITING)) waiting(part, "Computing…", "hint");
  // Each part: "pending" (asked), "done" (drawn), "failed" (its error told) or "stalled".
  const state = { counts: "pending", daily: "pending", models: "pending" };
  let error = ""; // the first error stays
  let counts = null;
  let daily = null;
  const settle = () => {
    // The totals once the counts are there and the daily credits (their value) came or did not.
    if (counts && state.daily !== "pending") renderTotals(counts, daily, state.daily, population);
    const given = Object.keys(state).filter((part) => state[part] === "stalled").map((part) => PARTS[part].name);
    status.className = error || given.length ? "error" : "hint";
    if (error) status.textContent = error;
    else if (given.length) status.textContent = `${given.join(" and ")}: no answer in ${PART_SECONDS} s, the page gave up waiting (Try again, on the card).`;
    else if (state.counts === "pending" || state.daily === "pending") status.textContent = computing;
    else if (state.models === "pending") status.textContent = "Computing the model comparison…";
    else status.textContent = "";
    const parts = Object.values(state);
    document.body.dataset.state = parts.includes("pending") ? "loading" : error || given.length ? "error" : "ready";
  };
  // Asks for a part and draws it; given up (Stalled), its card's button asks again.
  const load = (part, draw) => {
    state[part] = "pending";
    settle();
    waiting(part, "Computing…", "hint", PARTS[part].home); // its own card: "computing again…"
    return summary(ask, part).then(draw).then(
      () => { state[part] = "done"; },
      (err) => {
        if (err instanceof Stalled) {
          state[part] = "stalled";
          stalled(part, () => load(part, draw));
          waiting(part, `No answer in ${PART_SECONDS} s: see ${PARTS[part].name.split(" (")[0].toLowerCase()} above (Try again).`, "error", PARTS[part].home);
        } else {
          state[part] = "failed";
          waiting(part, "Not computed: see why at the top of the page.", "error");
          error ||= err.message;
          // A conversion name the API refuses (`?conversion=%20purchase`, 201 characters): its
          // reason is told above, and the form no longer offers the name as a choice.
          if (err.message.startsWith("conversion:")) dropConversion(form, period.conversion);
        }
      },
    ).finally(settle);
  };
  load("counts", (data) => {
    fillForm(form, data);
    renderTop("#chart-campaigns", data.top_campaigns, "#2563eb", "campaigns", data.landed.campaigns, data.not_credited.campaigns, data.since);
    renderTop("#chart-creators", data.top_creators, "#9333ea", "creators", data.landed.creators, data.not_credited.creators, data.since);
    renderBots(data);
    renderExports(data, population);
    counts = data;
  });
  await load("daily", (data) => {
    renderDaily(data);
    daily = data;
  });
  load("models", renderModels);
}

main();
