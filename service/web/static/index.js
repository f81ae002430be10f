// The main page: sign in or register; upload many files resumably through tus (tus-js-client);
// the user's files, kept current by their event streams (no polling), shown and downloaded through
// the signed links in each file's JSON (thumbnail_url, content_url, events_url).
"use strict";

(() => {
  const { api, el, bytes, when, notice } = chunkd;
  const $ = (id) => document.getElementById(id);

  const CHUNK_SIZE = 8 * 1024 * 1024; // one PATCH each: what a reload or a dropped link can lose
  const PARALLEL_UPLOADS = 2; // with MAX_STREAMS and the API's calls: within a browser's 6 connections
  const MAX_STREAMS = 3;
  const PAGE_SIZE = 10;
  const TERMINAL = new Set(["COMPLETED", "FAILED"]);

  let user = null;

  // ---- signed in or not ---------------------------------------------------------------------------

  function showSignIn(message) {
    user = null;
    stopStreams();
    for (const item of uploads.values()) item.upload.abort();
    uploads.clear();
    $("queue").replaceChildren();
    $("app").hidden = true;
    $("account").hidden = true;
    $("signin").hidden = false;
    notice(message);
    $("signin-form").elements.email.focus();
  }

  function showApp(who) {
    user = who;
    $("signin").hidden = true;
    $("app").hidden = false;
    $("account").hidden = false;
    $("whoami").textContent = `${who.email}${who.role === "ADMIN" ? " (admin)" : ""}`;
    $("admin-link").hidden = who.role !== "ADMIN";
    $("files-title").textContent = who.role === "ADMIN" ? "All files" : "My files";
    showUnfinished();
    const detail = new URLSearchParams(location.search).get("file");
    if (detail) showDetail(detail);
    loadFiles();
  }

  chunkd.onSignedOut(showSignIn);

  async function submitting(form, action) {
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await action();
    } catch (e) {
      notice(e.message);
    } finally {
      button.disabled = false;
    }
  }

  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.target;
    submitting(form, async () => {
      const who = await chunkd.signIn(form.elements.email.value, form.elements.password.value);
      form.reset();
      notice("");
      showApp(who);
    });
  });

  $("register-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const form = event.target;
    submitting(form, async () => {
      const who = await chunkd.register(form.elements.email.value, form.elements.password.value,
                                        form.elements.name.value);
      form.reset();
      notice("");
      showApp(who);
    });
  });

  $("sign-out").addEventListener("click", () => chunkd.signOut().catch(() => {}));

  // ---- uploads ------------------------------------------------------------------------------------

  const uploads = new Map(); // queue row id -> {file, upload, row, state}
  let nextRow = 0;
  const uploadingHere = new Set(); // file ids this window is sending: their progress is local

  function fileIdOf(url) {
    return url ? url.split("/").pop() : null;
  }

  function base64(buffer) {
    let text = "";
    for (const b of new Uint8Array(buffer)) text += String.fromCharCode(b);
    return btoa(text);
  }

  // tus checksum extension: every PATCH carries the SHA-256 of its body, which the server checks before
  // keeping it. The body is the file's slice at Upload-Offset, CHUNK_SIZE long (tus-js-client's rule).
  async function signRequest(req, file) {
    req.setHeader("Authorization", `Bearer ${await chunkd.accessToken()}`);
    if (req.getMethod() !== "PATCH" || !(window.crypto && crypto.subtle)) return;
    const offset = Number(req.getHeader("Upload-Offset"));
    const body = file.slice(offset, Math.min(offset + CHUNK_SIZE, file.size));
    req.setHeader("Upload-Checksum", `sha256 ${base64(await crypto.subtle.digest("SHA-256", await body.arrayBuffer()))}`);
  }

  function problemOf(error) {
    const response = error && error.originalResponse;
    if (response) {
      try {
        const body = JSON.parse(response.getBody());
        if (body.detail) return body.detail;
      } catch {
        /* not a problem body */
      }
      return `HTTP ${response.getStatus()}`;
    }
    return error ? error.message : "upload failed";
  }

  function addFiles(files) {
    if (typeof tus === "undefined") {
      notice("The upload client is not installed: run make install (npm ci in service/web/), then restart chunkd.");
      return;
    }
    for (const file of files) queueFile(file);
    pump();
  }

  function queueFile(file) {
    const id = `upload-${nextRow++}`;
    const progress = el("progress", { max: "100", value: "0", "aria-labelledby": `${id}-name` });
    const state = el("span", { class: "state", text: "waiting" });
    const toggle = el("button", { type: "button", "aria-label": `Pause ${file.name}`, text: "Pause" });
    const row = el("li", { id, class: "upload", dataset: { name: file.name } },
      el("span", { id: `${id}-name`, class: "name", text: file.name }),
      progress, state, toggle);
    $("queue").append(row);
    const item = { file, row, progress, state, toggle, status: "waiting", upload: null };
    uploads.set(id, item);
    item.upload = new tus.Upload(file, {
      endpoint: "/api/tus/",
      chunkSize: CHUNK_SIZE,
      retryDelays: [0, 1000, 3000, 5000, 10000, 20000],
      metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
      // Per user: the same file chosen by another account on this browser is a new upload.
      fingerprint: (f) => Promise.resolve(["chunkd", user.id, f.name, f.type, f.size, f.lastModified].join("/")),
      removeFingerprintOnSuccess: true,
      onBeforeRequest: (req) => signRequest(req, file),
      onUploadUrlAvailable: () => {
        uploadingHere.add(fileIdOf(item.upload.url));
        loadFiles();
      },
      onProgress: (sent, total) => {
        const percent = total ? Math.floor((sent / total) * 100) : 0;
        progress.value = percent;
        state.textContent = `${percent}% · ${bytes(sent)} of ${bytes(total)}`;
      },
      onSuccess: () => {
        item.status = "done";
        progress.value = 100;
        state.textContent = "uploaded, processing…";
        toggle.remove();
        uploadingHere.delete(fileIdOf(item.upload.url));
        row.dataset.fileId = fileIdOf(item.upload.url);
        row.classList.add("done");
        loadFiles();
        pump();
      },
      onError: (error) => {
        item.status = "failed";
        state.textContent = `failed: ${problemOf(error)}`;
        toggle.textContent = "Retry";
        toggle.setAttribute("aria-label", `Retry ${file.name}`);
        row.classList.add("failed");
        uploadingHere.delete(fileIdOf(item.upload.url));
        pump();
      },
    });
    toggle.addEventListener("click", () => {
      if (item.status === "running") {
        item.upload.abort(); // keeps the upload on the server: start() carries on from its offset
        item.status = "paused";
        state.textContent = `paused at ${progress.value}%`;
        toggle.textContent = "Resume";
        toggle.setAttribute("aria-label", `Resume ${file.name}`);
        pump();
      } else if (item.status === "paused" || item.status === "failed") {
        item.status = "waiting";
        state.textContent = "waiting";
        toggle.textContent = "Pause";
        toggle.setAttribute("aria-label", `Pause ${file.name}`);
        row.classList.remove("failed");
        pump();
      }
    });
  }

  async function begin(item) {
    item.status = "running";
    item.state.textContent = "starting";
    if (!item.upload.url) {
      const previous = await item.upload.findPreviousUploads();
      if (previous.length) {
        item.upload.resumeFromPreviousUpload(previous[0]);
        item.state.textContent = "resuming an earlier upload";
        item.row.classList.add("resumed");
      }
    }
    item.upload.start();
  }

  function pump() {
    const items = [...uploads.values()];
    let running = items.filter((i) => i.status === "running").length;
    for (const item of items) {
      if (running >= PARALLEL_UPLOADS) break;
      if (item.status === "waiting") {
        running++;
        begin(item).catch((e) => {
          item.status = "failed";
          item.state.textContent = `failed: ${e.message}`;
        });
      }
    }
  }

  async function showUnfinished() {
    const box = $("unfinished");
    box.hidden = true;
    if (typeof tus === "undefined") return;
    const mine = (await tus.defaultOptions.urlStorage.findAllUploads())
      .filter((u) => u.urlStorageKey.includes(`chunkd/${user.id}/`));
    if (!mine.length) return;
    const names = mine.map((u) => `${(u.metadata && u.metadata.filename) || "a file"} (${bytes(u.size)})`);
    box.textContent = `Unfinished from before: ${names.join(", ")}. Choose the same file again to resume it.`;
    box.hidden = false;
  }

  const input = $("file-input");
  input.addEventListener("change", () => {
    addFiles([...input.files]);
    input.value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    addFiles([...event.dataTransfer.files]);
  });

  // ---- the file list ------------------------------------------------------------------------------

  let page = 1;
  let loading = null;
  const rows = new Map(); // file id -> li

  async function loadFiles() {
    // One load at a time; a request made meanwhile runs once after it.
    if (loading) {
      loading.again = true;
      return;
    }
    loading = { again: false };
    try {
      const filters = $("filters").elements;
      const query = new URLSearchParams({ page, limit: PAGE_SIZE });
      if (filters.status.value) query.set("status", filters.status.value);
      if (filters.type.value) query.set("type", filters.type.value);
      const body = await api(`/api/files?${query}`);
      render(body.files, body.pagination);
    } catch (e) {
      if (!(e instanceof chunkd.SignedOut)) notice(e.message);
    } finally {
      const again = loading.again;
      loading = null;
      if (again) loadFiles();
    }
  }

  function render(files, pagination) {
    const list = $("file-list");
    rows.clear();
    list.replaceChildren(...files.map((f) => {
      const row = fileRow(f);
      rows.set(f.id, row);
      return row;
    }));
    $("files-empty").hidden = files.length > 0;
    const pages = Math.max(1, pagination.pages);
    $("page-info").textContent = `Page ${pagination.page} of ${pages} · ${pagination.total} files`;
    $("prev-page").disabled = pagination.page <= 1;
    $("next-page").disabled = pagination.page >= pages;
    followStreams(files);
  }

  function fileRow(file) {
    const row = el("li", { class: "file", dataset: { id: file.id } });
    fillRow(row, file);
    return row;
  }

  function fillRow(row, file) {
    row.dataset.status = file.status;
    const uploaded = document.querySelector(`#queue li[data-file-id="${file.id}"] .state`);
    if (uploaded && TERMINAL.has(file.status)) {
      uploaded.textContent = file.status === "COMPLETED" ? "done" : `failed: ${file.error}`;
    }
    const thumb = el("div", { class: "thumb" }, el("span", { class: "kind", text: (file.type || "").slice(0, 3) }));
    if (file.status === "COMPLETED" && file.thumbnail) showThumbnail(thumb, file);
    const sha = file.metadata && file.metadata.sha256;
    row.replaceChildren(
      thumb,
      el("div", { class: "about" },
        el("a", { class: "name", href: `/?file=${encodeURIComponent(file.id)}`, text: file.original_name }),
        el("span", { class: "meta", text: `${file.type} · ${file.mimetype} · ${bytes(file.size)} · ${when(file.created_at)}` }),
        el("span", { class: `status status-${file.status}`, text: file.status }),
        file.error ? el("p", { class: "error", text: file.error }) : null,
        sha ? el("span", { class: "sha", title: "SHA-256", text: `sha256 ${sha.slice(0, 16)}…` }) : null),
      el("div", { class: "actions" },
        file.status === "COMPLETED" && file.content_url ? downloadControl(file) : null,
        el("button", { type: "button", class: "danger", "aria-label": `Delete ${file.original_name}`, text: "Delete",
                       onclick: () => confirmDelete(file) })));
  }

  // Signed links (issue 13): <img> and downloads need no header. A link lives LINK_TTL/2 at least; an
  // expired one answers 403, and the file's JSON gives a fresh one.
  function showThumbnail(box, file) {
    if (!file.thumbnail_url) return;
    const img = el("img", { alt: `Preview of ${file.original_name}`, width: "64", height: "64", src: file.thumbnail_url });
    img.addEventListener("error", async () => {
      if (img.dataset.retried) return;
      img.dataset.retried = "1";
      const fresh = await fresher(file);
      if (fresh && fresh.thumbnail_url) img.src = fresh.thumbnail_url;
    });
    box.replaceChildren(img);
  }

  async function fresher(file) {
    try {
      return await api(`/api/files/${encodeURIComponent(file.id)}`);
    } catch (e) {
      if (!(e instanceof chunkd.SignedOut)) notice(e.message);
      return null;
    }
  }

  function expiresSoon(url) {
    const exp = Number(new URL(url, location.href).searchParams.get("exp"));
    return !exp || exp * 1000 - Date.now() < 60000;
  }

  function downloadControl(file) {
    const link = el("a", { class: "button", href: file.content_url, download: file.original_name,
                           "aria-label": `Download ${file.original_name}`, text: "Download" });
    link.addEventListener("click", async (event) => {
      if (!expiresSoon(link.href)) return;
      event.preventDefault(); // an old page: take a fresh link first
      const fresh = await fresher(file);
      if (fresh && fresh.content_url) {
        link.href = fresh.content_url;
        link.click();
      }
    });
    return link;
  }

  $("filters").addEventListener("change", () => {
    page = 1;
    loadFiles();
  });
  $("prev-page").addEventListener("click", () => {
    page = Math.max(1, page - 1);
    loadFiles();
  });
  $("next-page").addEventListener("click", () => {
    page += 1;
    loadFiles();
  });

  // ---- delete -------------------------------------------------------------------------------------

  let deleting = null;
  const dialog = $("confirm-delete");

  function confirmDelete(file) {
    deleting = file;
    $("delete-name").textContent = file.original_name;
    dialog.returnValue = "";
    dialog.showModal();
  }

  dialog.addEventListener("close", async () => {
    const file = deleting;
    deleting = null;
    if (!file || dialog.returnValue !== "delete") return;
    for (const [id, item] of uploads) {
      if (item.upload.url && fileIdOf(item.upload.url) === file.id) {
        item.upload.abort();
        item.row.remove();
        uploads.delete(id);
      }
    }
    try {
      await api(`/api/files/${file.id}`, { method: "DELETE" });
      notice("");
    } catch (e) {
      notice(e.message);
    }
    loadFiles();
  });

  // ---- live status: one event stream per unfinished file on the page ----------------------------

  const streams = new Map(); // file id -> AbortController
  let wanted = [];

  function followStreams(files) {
    wanted = files.filter((f) => !TERMINAL.has(f.status) && !uploadingHere.has(f.id));
    const keep = new Set(wanted.map((f) => f.id));
    for (const [id, controller] of streams) if (!keep.has(id)) controller.abort();
    openStreams();
  }

  function stopStreams() {
    wanted = [];
    for (const controller of streams.values()) controller.abort();
  }

  function openStreams() {
    for (const file of wanted) {
      if (streams.size >= MAX_STREAMS) return;
      if (!streams.has(file.id)) follow(file);
    }
  }

  function onStatus(data) {
    const row = rows.get(data.id);
    if (row) fillRow(row, data);
  }

  function follow(file) {
    const controller = new AbortController();
    streams.set(file.id, controller);
    let last = file.status;
    const onEvent = (type, data) => {
      if (type === "status") {
        last = data.status;
        onStatus(data);
      } else if (type === "deleted") {
        last = "deleted";
        const row = rows.get(file.id);
        if (row) row.remove();
      }
    };
    eventSource(file.events_url, onEvent, controller.signal).then(() => {
      streams.delete(file.id);
      if (controller.signal.aborted) return openStreams();
      wanted = wanted.filter((f) => f.id !== file.id);
      // Ended early (a restart, an expired link, the database away): fresh links, then follow again.
      if (!TERMINAL.has(last) && last !== "deleted" && rows.has(file.id)) {
        setTimeout(async () => {
          if (!user || !rows.has(file.id) || streams.has(file.id)) return;
          const fresh = await fresher(file);
          if (!fresh || !rows.has(file.id)) return;
          onStatus(fresh);
          if (!TERMINAL.has(fresh.status)) {
            wanted.push(fresh);
            openStreams();
          }
        }, 3000);
      }
      openStreams();
    });
  }

  // The signed events_url needs no header: the browser's own EventSource, closed at a final status. It
  // reconnects by itself after a dropped connection; a refused one (an expired link) closes it for good.
  function eventSource(url, onEvent, signal) {
    return new Promise((resolve) => {
      const source = new EventSource(url);
      const close = () => {
        source.close();
        resolve();
      };
      signal.addEventListener("abort", close);
      source.addEventListener("status", (e) => {
        const data = JSON.parse(e.data);
        onEvent("status", data);
        if (TERMINAL.has(data.status)) close();
      });
      source.addEventListener("deleted", (e) => {
        onEvent("deleted", JSON.parse(e.data));
        close();
      });
      source.addEventListener("error", () => {
        if (source.readyState === EventSource.CLOSED) close();
      });
    });
  }

  // ---- one file's details (?file=ID), linked from the list and the admin's failed files ----------

  async function showDetail(id) {
    const section = $("detail");
    try {
      const file = await api(`/api/files/${encodeURIComponent(id)}`);
      const meta = file.metadata || {};
      const fields = [
        ["Name", file.original_name], ["Status", file.status], ["Error", file.error], ["Type", file.type],
        ["MIME type", file.mimetype], ["Size", `${bytes(file.size)} (${chunkd.count(file.size)} bytes)`],
        ["SHA-256", meta.sha256], ["Dimensions", meta.width ? `${meta.width} × ${meta.height}` : null],
        ["Uploaded by", file.uploaded_by_id], ["Created", when(file.created_at)], ["Updated", when(file.updated_at)],
        ["ID", file.id],
      ].filter(([, value]) => value !== null && value !== undefined);
      $("detail-fields").replaceChildren(...fields.flatMap(([name, value]) => [el("dt", { text: name }),
                                                                            el("dd", { text: String(value) })]));
      $("detail-title").textContent = file.original_name;
      section.hidden = false;
    } catch (e) {
      notice(e.message);
    }
  }

  // ---- start --------------------------------------------------------------------------------------

  const who = chunkd.current();
  if (who) showApp(who);
  else showSignIn("");
})();
