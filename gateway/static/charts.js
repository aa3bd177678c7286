// Hand-written SVG charts: no library, no external asset. Every element is built with DOM
// calls and presentation attributes (never a style attribute or innerHTML), so the page runs
// under Content-Security-Policy: default-src 'self'.

const NS = "http://www.w3.org/2000/svg";
// Twenty colours: each built-in channel a model can credit (all but Internal) has its own,
// each at least 15 from every other in CIELAB (the 12th was #7c3aed, 7 from the 4th: one purple).
const PALETTE = [
  "#2563eb", "#16a34a", "#ea580c", "#9333ea", "#dc2626", "#0891b2",
  "#ca8a04", "#db2777", "#4f46e5", "#65a30d", "#0d9488", "#c084fc",
  "#be123c", "#0369a1", "#c026d3", "#475569", "#92400e", "#064e3b", "#1e3a8a", "#fb7185",
];
const AXIS = "#94a3b8";
const INK = "#334155";

// Past the twenty (a channels table of its own, the models to come), a colour each all the
// same: hues a golden angle apart, at three lightnesses in turn, so that neighbours in a stack
// differ most; a colour already given (or the palette's) is passed over. Deterministic: the
// same names in the same order have the same colours on every page and every reload.
function generated(i) {
  const hue = (i * 137.508 + 200) % 360;
  const [s, l] = [[0.7, 0.45], [0.6, 0.32], [0.75, 0.6]][i % 3];
  const k = (n) => (n + hue / 30) % 12;
  const a = s * Math.min(l, 1 - l);
  const channel = (n) => Math.round(255 * (l - a * Math.max(-1, Math.min(k(n) - 3, 9 - k(n), 1))));
  return `#${[0, 8, 4].map((n) => channel(n).toString(16).padStart(2, "0")).join("")}`;
}

// names: the series in order; fixed: names whose colour is the palette's at their place in
// it, whatever the series (the built-in channels: Email was blue in a period it led and green
// in one Paid Search led). Without fixed, the palette goes in the series' order; the names
// fixed does not hold get made colours, in the series' order.
export function colors(names, fixed = []) {
  const map = new Map();
  const used = new Set(PALETTE);
  let next = 0;
  let free = fixed.length ? PALETTE.length : 0;
  for (const name of names) {
    const place = fixed.indexOf(name);
    if (place >= 0 && place < PALETTE.length) {
      map.set(name, PALETTE[place]);
      continue;
    }
    if (free < PALETTE.length) {
      map.set(name, PALETTE[free++]);
      continue;
    }
    let color = generated(next++);
    while (used.has(color)) color = generated(next++);
    used.add(color);
    map.set(name, color);
  }
  return map;
}

function svg(name, attrs = {}, parent = null) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, content, attrs = {}) {
  const node = svg("text", { x, y, fill: INK, "font-size": 12, ...attrs }, parent);
  node.textContent = content;
  return node;
}

function titled(node, title) {
  const t = svg("title", {}, node);
  t.textContent = title;
  return node;
}

// A chart's width in its own units: on a desktop, `wide` (its drawn scale, fitted to the card);
// on a card narrower than that, or than 600 (a phone, a tablet), the card's own width, so that its text is
// drawn at its size instead of shrunk (to a third on a phone; to three quarters, labels 8
// pixels high, on a 768-pixel tablet, when only cards under 600 were drawn so); on a card
// wider than MOST_SCALE times `wide` (a wide monitor), the card's width over MOST_SCALE: the
// daily chart, drawn 900 wide on a 2,560-pixel window, was scaled 2.8 times, its labels 31
// pixels high and the chart 770 tall.
const MOST_SCALE = 1.4;

function widthFor(container, wide) {
  const own = container.clientWidth;
  if (own && own < Math.max(wide, 600)) return Math.max(own, 280);
  return own > wide * MOST_SCALE ? Math.round(own / MOST_SCALE) : wide;
}

function frame(container, width, height, label) {
  container.replaceChildren();
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width: "100%",
    role: "img",
    "aria-label": label,
  });
  container.appendChild(root);
  return root;
}

function empty(container, message) {
  container.replaceChildren();
  const p = document.createElement("p");
  p.className = "empty";
  p.textContent = message;
  container.appendChild(p);
}

// The axis top: four equal steps of 1, 2, 2.5 or 5 times a power of ten, covering value.
function niceMax(value) {
  if (value <= 0) return 1;
  const raw = value / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  return 4 * step;
}

// Numbers as the page's tables print them (dashboard.js), whatever the browser's language:
// thousands apart (an axis read 1200 where the table beside it read 1,200), a whole number
// without decimals, a credit to two (a tooltip said 2.00 where the table said 2).
const WHOLE = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const TWO = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const STEP = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

function number(n) {
  return Number.isInteger(n) ? WHOLE.format(n) : TWO.format(n);
}

// A bar's number with its unit, one in the singular ("1 conversion": it read "1 conversions").
function counted(n, unit) {
  return `${number(n)} ${n === 1 ? unit.replace(/s$/, "") : unit}`;
}

// An axis step: 0.25, 0.5, 1,200.
function tick(value) {
  return STEP.format(value);
}

function yAxis(root, left, top, height, width, max) {
  for (let i = 0; i <= 4; i += 1) {
    const y = top + height - (height * i) / 4;
    svg("line", { x1: left, x2: left + width, y1: y, y2: y, stroke: "#e2e8f0" }, root);
    text(root, left - 6, y + 4, tick((max * i) / 4), { "text-anchor": "end", "font-size": 11 });
  }
  svg("line", { x1: left, x2: left, y1: top, y2: top + height, stroke: AXIS }, root);
}

// What the daily chart and the model comparison say when they have nothing to draw (emptyText:
// the page's own words, a population's).
const NO_CONVERSIONS = "No conversions in this period.";

// categories: x labels; series: [{name, values}] stacked in order; palette: Map name → colour.
export function stackedBars(container, { categories, series, palette, label, unit, emptyText = NO_CONVERSIONS }) {
  const totals = categories.map((_, i) => series.reduce((sum, s) => sum + s.values[i], 0));
  if (!series.length || totals.every((t) => t === 0)) return empty(container, emptyText);
  const W = widthFor(container, 900), H = 280, left = 44, top = 12, bottom = 40, right = 8;
  const plotW = W - left - right, plotH = H - top - bottom;
  const root = frame(container, W, H, label);
  const max = niceMax(Math.max(...totals));
  yAxis(root, left, top, plotH, plotW, max);
  const slot = plotW / categories.length;
  // A bar is at most 48 units wide: a period of one day was one bar across the whole chart.
  const barW = Math.min(Math.max(2, slot * 0.7), 48);
  // At most twelve day labels, and each at least 40 units from the next (a phone's width).
  const every = Math.max(Math.ceil(categories.length / 12), Math.ceil(40 / slot));
  categories.forEach((category, i) => {
    let y = top + plotH;
    const x = left + i * slot + (slot - barW) / 2;
    for (const s of series) {
      const v = s.values[i];
      if (!v) continue;
      const h = (v / max) * plotH;
      y -= h;
      titled(
        svg("rect", { x, y, width: barW, height: Math.max(h, 0.5), fill: palette.get(s.name), "data-series": s.name }, root),
        `${category} · ${s.name}: ${counted(v, unit)}`,
      );
    }
    if (i % every === 0) {
      text(root, x + barW / 2, H - bottom + 16, category.slice(5), { "text-anchor": "middle", "font-size": 11 });
    }
  });
  return root;
}

// groups: x labels (channels); series: [{name, values}] side by side in each group.
export function groupedBars(container, { groups, series, palette, label, unit, emptyText = NO_CONVERSIONS }) {
  const all = series.flatMap((s) => s.values);
  if (!groups.length || all.every((v) => v === 0)) return empty(container, emptyText);
  const W = widthFor(container, 900), H = 300, left = 44, top = 12, bottom = 56, right = 8;
  const plotW = W - left - right, plotH = H - top - bottom;
  const root = frame(container, W, H, label);
  const max = niceMax(Math.max(...all));
  yAxis(root, left, top, plotH, plotW, max);
  const slot = plotW / groups.length;
  const barW = Math.max(1.5, (slot * 0.8) / series.length);
  groups.forEach((group, g) => {
    const start = left + g * slot + slot * 0.1;
    series.forEach((s, k) => {
      const v = s.values[g];
      if (!v) return;
      const h = (v / max) * plotH;
      titled(
        svg("rect", {
          x: start + k * barW, y: top + plotH - h, width: Math.max(barW - 1, 1), height: Math.max(h, 0.5),
          fill: palette.get(s.name), "data-series": s.name,
        }, root),
        `${group} · ${s.name}: ${counted(v, unit)}`,
      );
    });
  });
  slantedWhenCrowded(root, groups.map((group, g) => text(root, left + g * slot + slot / 2, H - bottom + 16, group, {
    "text-anchor": "middle", "font-size": 11,
  })), slot, W, H);
  return root;
}

// Group names wider than their slot would run into each other: each is slanted instead,
// ending under its group (one cut past 160 units keeps its whole name in a tooltip), and the
// chart grows down and left to hold them. Slanted names are LINE apart across the slant: 35
// degrees, or steeper when the slots are narrow (a dozen channels and more on a phone), up to
// upright. Slots narrower than that even upright (three dozen channels on a phone), whose names
// were drawn over each other, name every second (third…) group only, as the daily chart labels
// fewer days: each group's bars name it when hovered, and the table under the chart lists all.
const LINE = 12;
function slantedWhenCrowded(root, labels, slot, W, H) {
  if (Math.max(...labels.map(widthOf)) <= slot - 4) return;
  const every = Math.ceil(LINE / slot);
  if (every > 1) {
    labels.forEach((node, i) => i % every && node.remove());
    labels = labels.filter((_, i) => i % every === 0);
    slot *= every;
  }
  const steep = Math.asin(Math.min(1, LINE / slot));
  const rad = Math.max((35 * Math.PI) / 180, steep), angle = (rad * 180) / Math.PI;
  let bottom = H, leftmost = 0;
  for (const node of labels) {
    const name = node.textContent;
    fitText(node, name, 160);
    if (node.textContent !== name) titled(node, name);
    const x = Number(node.getAttribute("x")), y = Number(node.getAttribute("y")) - 4;
    node.setAttribute("y", y);
    node.setAttribute("text-anchor", "end");
    node.setAttribute("transform", `rotate(${-angle} ${x} ${y})`);
    const w = widthOf(node);
    bottom = Math.max(bottom, y + w * Math.sin(rad) + 10);
    leftmost = Math.min(leftmost, x - w * Math.cos(rad) - 4);
  }
  root.setAttribute("viewBox", `${leftmost} 0 ${W - leftmost} ${bottom}`);
}

// The drawn width of an SVG text, in the chart's units; a guess from its length where the
// browser lays out nothing (a chart drawn while hidden).
function widthOf(node) {
  return node.getComputedTextLength() || node.textContent.length * 7;
}

// Cuts a text node's content (whole characters, an emoji included) until it is at most max wide.
// With keepEnd, the cut is in the middle, a third of what is kept from the end: names of one
// naming scheme (spring-2027-lookalike-0001, …-0007) differ at their end, and cut there they
// read alike ("spring-2027-look…" twice in one chart).
function fitText(node, content, max, keepEnd = false) {
  node.textContent = content;
  if (widthOf(node) <= max) return;
  const chars = Array.from(content);
  const cut = (n) => {
    const tail = keepEnd ? Math.floor(n / 3) : 0;
    return `${chars.slice(0, n - tail).join("")}…${chars.slice(chars.length - tail).join("")}`;
  };
  let lo = 0, hi = chars.length - 1;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    node.textContent = cut(mid);
    if (widthOf(node) <= max) lo = mid; else hi = mid - 1;
  }
  node.textContent = cut(lo);
}

// rows: [{label, value, note, spoken}] largest first, drawn as horizontal bars. Names and notes
// are measured as drawn, so none runs off the chart whatever its length, script or digits: a
// name wider than a third of the chart is cut in the middle (the tooltip keeps it whole). A
// screen reader, for which the chart is one image, reads each whole name and its `spoken` numbers.
export function horizontalBars(container, { rows, color, label, emptyText }) {
  if (!rows.length) return empty(container, emptyText);
  // The card's width (at most 420, the widest it is drawn): on a phone its text keeps its size.
  const rowH = 28, W = Math.min(widthFor(container, 360), 420), gap = 6, minBar = 40;
  const H = rows.length * rowH + 8;
  const said = rows.map((row) => `${row.label}: ${row.spoken || row.note}`).join("; ");
  const root = frame(container, W, H, `${label}. ${said}.`);
  const notes = rows.map((row, i) => text(root, 0, 4 + i * rowH + 16, row.note, { "font-size": 11 }));
  const noteW = Math.max(...notes.map(widthOf)) + gap;
  const names = rows.map((row, i) => {
    const node = text(root, 0, 4 + i * rowH + 16, "", { "text-anchor": "end" });
    fitText(node, row.label, Math.max(Math.min(W / 3, W - noteW - minBar - 2 * gap), 24), true);
    return node;
  });
  const labelW = Math.max(...names.map(widthOf)) + gap;
  names.forEach((node, i) => titled(node, rows[i].label));
  const barSpace = Math.max(W - labelW - noteW - gap, minBar);
  const max = Math.max(...rows.map((r) => r.value), 1);
  rows.forEach((row, i) => {
    const y = 4 + i * rowH;
    names[i].setAttribute("x", labelW - gap);
    const w = Math.max((row.value / max) * barSpace, 1);
    titled(svg("rect", { x: labelW, y: y + 4, width: w, height: rowH - 8, rx: 2, fill: color, "data-series": row.label }, root), `${row.label}: ${row.note}`);
    notes[i].setAttribute("x", labelW + w + gap);
  });
  return root;
}

// parts: [{label, value, color}] as a ring; a screen reader reads each part and its share.
export function donut(container, { parts, label, emptyText }) {
  const total = parts.reduce((sum, p) => sum + p.value, 0);
  if (!total) return empty(container, emptyText);
  const W = 220, H = 180, cx = 110, cy = 90, r = 70, inner = 42;
  const shares = parts.filter((p) => p.value).map((p) => `${p.label}: ${number(p.value)} (${((p.value / total) * 100).toFixed(1)} %)`);
  const root = frame(container, W, H, `${label}. ${shares.join("; ")}.`);
  let angle = -Math.PI / 2;
  for (const part of parts) {
    if (!part.value) continue;
    const share = part.value / total;
    const pct = `${(share * 100).toFixed(1)} %`;
    if (share >= 0.9999) {
      titled(svg("circle", { cx, cy, r: (r + inner) / 2, fill: "none", stroke: part.color, "stroke-width": r - inner, "data-series": part.label }, root), `${part.label}: ${number(part.value)} (${pct})`);
      continue;
    }
    const end = angle + share * 2 * Math.PI;
    const large = share > 0.5 ? 1 : 0;
    const p = (a, radius) => `${cx + radius * Math.cos(a)} ${cy + radius * Math.sin(a)}`;
    const d = `M ${p(angle, r)} A ${r} ${r} 0 ${large} 1 ${p(end, r)} L ${p(end, inner)} A ${inner} ${inner} 0 ${large} 0 ${p(angle, inner)} Z`;
    titled(svg("path", { d, fill: part.color, "data-series": part.label }, root), `${part.label}: ${number(part.value)} (${pct})`);
    angle = end;
  }
  // The largest part's share, and whose: a bare "91 %" did not say of what.
  const main = parts.reduce((a, b) => (b.value > a.value ? b : a));
  text(root, cx, cy + 1, `${((main.value / total) * 100).toFixed(0)} %`, { "text-anchor": "middle", "font-size": 16, "font-weight": 600 });
  const whose = main.label.length > 10 ? `${main.label.slice(0, 9)}…` : main.label;
  text(root, cx, cy + 16, whose, { "text-anchor": "middle", "font-size": 11 });
  return root;
}

export function legend(container, items) {
  container.replaceChildren();
  for (const item of items) {
    const entry = document.createElement("span");
    entry.className = "legend-item";
    const swatch = svg("svg", { width: 12, height: 12, viewBox: "0 0 12 12", "aria-hidden": "true" });
    svg("rect", { width: 12, height: 12, rx: 2, fill: item.color }, swatch);
    entry.append(swatch, document.createTextNode(item.label));
    container.appendChild(entry);
  }
}
