// Charts drawn as SVG by the page itself: a few dozen lines instead of a charting library, styled by
// app.css (no inline styles under the CSP), each bar with a <title> a screen reader or a hover reads.
"use strict";

const charts = (() => {
  const NS = "http://www.w3.org/2000/svg";

  function svg(tag, attributes = {}, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    for (const child of children) node.append(child);
    return node;
  }

  function title(text) {
    const node = svg("title");
    node.textContent = text;
    return node;
  }

  function label(x, y, text, anchor = "middle") {
    const node = svg("text", { x, y, "text-anchor": anchor });
    node.textContent = text;
    return node;
  }

  // Vertical bars, one per item: value(item) is the height, describe(item) its title, tick(item) an
  // x label shown for a few bars only.
  function columns(items, { value, describe, tick, scale, caption, attributes }) {
    const width = 720, height = 220, left = 56, bottom = 24, top = 10;
    const max = Math.max(1, ...items.map(value));
    const step = (width - left) / Math.max(1, items.length);
    const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
                                "aria-label": caption });
    chart.append(
      svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom }),
      label(left - 6, top + 8, scale(max), "end"),
      label(left - 6, height - bottom, scale(0), "end"));
    const every = Math.ceil(items.length / 6);
    items.forEach((item, i) => {
      const h = ((height - bottom - top) * value(item)) / max;
      const bar = svg("rect", { class: "bar-rect", x: left + i * step + step * 0.1, y: height - bottom - h,
                                width: Math.max(1, step * 0.8), height: Math.max(0, h), ...attributes(item) },
        title(describe(item)));
      chart.append(bar);
      if (i % every === 0) chart.append(label(left + i * step + step / 2, height - 6, tick(item)));
    });
    return chart;
  }

  // Horizontal bars with a name and a formatted value each.
  function bars(rows, { caption }) {
    const max = Math.max(1, ...rows.map((r) => r.value));
    const box = document.createElement("div");
    box.setAttribute("role", "list");
    box.setAttribute("aria-label", caption);
    for (const row of rows) {
      const line = document.createElement("div");
      line.className = "hbar";
      line.setAttribute("role", "listitem");
      Object.assign(line.dataset, row.dataset || {});
      const name = document.createElement("span");
      name.textContent = row.name;
      const value = document.createElement("span");
      value.className = "num";
      value.textContent = row.text;
      const picture = svg("svg", { viewBox: "0 0 100 10", preserveAspectRatio: "none", "aria-hidden": "true" },
        svg("rect", { x: 0, y: 0, height: 10, width: (100 * row.value) / max }));
      line.append(name, picture, value);
      box.append(line);
    }
    return box;
  }

  return { columns, bars };
})();
