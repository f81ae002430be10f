// The admin dashboard: statistics from /api/admin/*, in human units and the viewer's time zone.
"use strict";

(() => {
  const { api, el, bytes, when, count, notice } = chunkd;
  const $ = (id) => document.getElementById(id);
  const FAILED_SHOWN = 20;

  function card(key, name, value, text) {
    return el("li", { class: "card", dataset: { stat: key, value: String(value) } },
      el("span", { class: "label", text: name }), el("span", { class: "value", text }));
  }

  function table(headings, rows) {
    return el("table", {},
      el("thead", {}, el("tr", {}, ...headings.map(([text, num]) => el("th", { class: num ? "num" : null, text })))),
      el("tbody", {}, ...rows));
  }

  function cell(text, num = false) {
    return el("td", { class: num ? "num" : null, text });
  }

  function sumBy(stats, key) {
    const totals = new Map();
    for (const s of stats) totals.set(s[key], (totals.get(s[key]) || 0) + s.total_size);
    return [...totals].map(([name, value]) => ({ name, value, text: bytes(value), dataset: { [key]: name, bytes: String(value) } }));
  }

  function overview(users, files, queue) {
    const total = files.reduce((n, s) => n + s.count, 0);
    const stored = files.reduce((n, s) => n + s.total_size, 0);
    $("cards").replaceChildren(
      card("users.total", "Users", users.total, count(users.total)),
      card("users.active", "Active users", users.active, count(users.active)),
      card("users.admins", "Admins", users.admins, count(users.admins)),
      card("users.regular", "Regular users", users.regular, count(users.regular)),
      card("files.count", "Files", total, count(total)),
      card("files.bytes", "Stored", stored, bytes(stored)),
      card("queue.waiting", "Waiting for a worker", queue.waiting, count(queue.waiting)),
      card("queue.claimed", "Processing now", queue.claimed, count(queue.claimed)),
      card("queue.blocked", "Held back (disk, storage)", queue.blocked, count(queue.blocked)));
  }

  function daily(days) {
    const total = days.reduce((n, d) => n + d.uploads, 0);
    const size = days.reduce((n, d) => n + d.total_size, 0);
    const summary = $("daily-summary");
    summary.textContent = `${count(total)} uploads, ${bytes(size)}, in the last ${days.length} days.`;
    summary.dataset.uploads = String(total);
    summary.dataset.bytes = String(size);
    const dayName = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
    const day = (d) => dayName.format(new Date(`${d.date}T00:00:00Z`));
    $("daily-chart").replaceChildren(charts.columns(days, {
      value: (d) => d.uploads,
      scale: (n) => count(Math.round(n)),
      tick: day,
      describe: (d) => `${d.date}: ${count(d.uploads)} uploads, ${bytes(d.total_size)}`,
      caption: `Uploads per day over ${days.length} days`,
      attributes: (d) => ({ "data-date": d.date, "data-uploads": d.uploads, "data-bytes": d.total_size }),
    }));
    $("daily-table").replaceChildren(table([["Day"], ["Uploads", true], ["Size", true]],
      days.filter((d) => d.uploads).reverse().map((d) => el("tr", {}, cell(d.date), cell(count(d.uploads), true),
                                                            cell(bytes(d.total_size), true)))));
  }

  function storage(files) {
    $("by-type").replaceChildren(charts.bars(sumBy(files, "type"), { caption: "Stored bytes by type" }));
    $("by-status").replaceChildren(charts.bars(sumBy(files, "status"), { caption: "Stored bytes by status" }));
    $("file-stats").replaceChildren(table(
      [["Type"], ["Status"], ["Files", true], ["Total", true], ["Average", true]],
      files.map((s) => el("tr", { dataset: { type: s.type, status: s.status } }, cell(s.type), cell(s.status),
                          cell(count(s.count), true), cell(bytes(s.total_size), true),
                          cell(bytes(s.average_size), true)))));
  }

  function failed(body) {
    const rows = body.files.map((f) => el("tr", { class: "failed-file", dataset: { id: f.id } },
      el("td", {}, el("a", { href: `/?file=${encodeURIComponent(f.id)}`, text: f.original_name })),
      cell(f.error || "–"), cell(bytes(f.size), true), cell(when(f.updated_at))));
    const total = body.pagination.total;
    $("failed").replaceChildren(
      el("p", { dataset: { total: String(total) },
                text: total ? `${count(total)} failed${total > FAILED_SHOWN ? `, the latest ${FAILED_SHOWN} shown` : ""}.`
                  : "No failed files." }),
      rows.length ? table([["File"], ["Reason"], ["Size", true], ["Failed at"]], rows) : "");
  }

  function database(db) {
    $("db-cards").replaceChildren(
      card("db.connections", "Connections", db.connections.total, count(db.connections.total)),
      card("db.active", "Active", db.connections.active, count(db.connections.active)),
      card("db.idle", "Idle", db.connections.idle, count(db.connections.idle)),
      card("pool.in_use", "Pool in use", db.pool.in_use, `${count(db.pool.in_use)} of ${count(db.pool.max)}`),
      card("pool.waiting", "Waiting for the pool", db.pool.waiting, count(db.pool.waiting)),
      card("db.size", "Database size", db.database.size_bytes, bytes(db.database.size_bytes)));
    $("tables").replaceChildren(table([["Table"], ["Rows", true], ["Data", true], ["Indexes", true], ["Total", true]],
      db.tables.slice(0, 8).map((t) => el("tr", {}, cell(t.name), cell(count(t.rows), true), cell(bytes(t.table_bytes), true),
                                        cell(bytes(t.index_bytes), true), cell(bytes(t.total_bytes), true)))));
    const statements = db.pg_stat_statements;
    $("statements").replaceChildren(statements
      ? table([["Statement"], ["Calls", true], ["Mean", true], ["Total", true]],
        statements.map((s) => el("tr", {}, el("td", {}, el("code", { text: s.query.slice(0, 300) })),
                                 cell(count(s.calls), true), cell(`${s.mean_ms.toFixed(1)} ms`, true),
                                 cell(`${(s.total_ms / 1000).toFixed(1)} s`, true))))
      : el("p", { class: "hint", text: db.pg_stat_statements_reason }));
  }

  function days() {
    return document.querySelector("input[name=days]:checked").value;
  }

  async function load() {
    try {
      const [users, files, queue, perDay, failures, db] = await Promise.all([
        api("/api/admin/stats/users"), api("/api/admin/stats/files"), api("/api/admin/stats/queue"),
        api(`/api/admin/stats/uploads/daily?days=${days()}`), api(`/api/files?status=FAILED&limit=${FAILED_SHOWN}`),
        api("/api/admin/db")]);
      overview(users, files, queue);
      daily(perDay);
      storage(files);
      failed(failures);
      database(db);
      const now = new Date();
      $("updated").dateTime = now.toISOString();
      $("updated").textContent = when(now.toISOString());
      $("dashboard").hidden = false;
      notice("");
    } catch (e) {
      if (e instanceof chunkd.ApiProblem && e.status === 403) refuse();
      else if (!(e instanceof chunkd.SignedOut)) notice(e.message);
    }
  }

  function refuse() {
    $("dashboard").hidden = true;
    $("refused").hidden = false;
  }

  function signedOut(message) {
    $("dashboard").hidden = true;
    $("account").hidden = true;
    $("signed-out").hidden = false;
    notice(message);
  }

  chunkd.onSignedOut(signedOut);
  $("sign-out").addEventListener("click", () => chunkd.signOut().catch(() => {}));
  $("reload").addEventListener("click", load);
  for (const radio of document.querySelectorAll("input[name=days]")) {
    radio.addEventListener("change", async () => {
      try {
        daily(await api(`/api/admin/stats/uploads/daily?days=${days()}`));
      } catch (e) {
        notice(e.message);
      }
    });
  }

  const who = chunkd.current();
  if (!who) {
    signedOut("");
    return;
  }
  $("account").hidden = false;
  $("whoami").textContent = who.email;
  if (who.role !== "ADMIN") refuse();
  else load();
})();
