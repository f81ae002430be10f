// What both pages share: the session (tokens kept in localStorage and refreshed before they expire),
// calls to the API that turn problem+json answers into errors with the API's `detail`, and formatting
// in human units and the viewer's time zone.
"use strict";

const chunkd = (() => {
  const KEY = "chunkd.session";
  const listeners = new Set();
  let timer = null;

  class SignedOut extends Error {}

  class ApiProblem extends Error {
    constructor(status, body) {
      super((body && (body.detail || body.title)) || `HTTP ${status}`);
      this.status = status;
      this.code = body && body.code;
    }
  }

  function load() {
    try {
      return JSON.parse(localStorage.getItem(KEY));
    } catch {
      return null;
    }
  }

  function fromLogin(body) {
    return {
      access_token: body.access_token,
      refresh_token: body.refresh_token,
      expires_at: Date.now() + body.expires_in * 1000,
      expires_in: body.expires_in,
      user: body.user,
    };
  }

  function store(session) {
    localStorage.setItem(KEY, JSON.stringify(session));
    schedule(session);
  }

  function end(reason) {
    localStorage.removeItem(KEY);
    clearTimeout(timer);
    for (const listener of listeners) listener(reason);
  }

  // Refresh a minute before expiry (at three quarters of a short lifetime).
  function schedule(session) {
    clearTimeout(timer);
    const lifetime = session.expires_in * 1000;
    const early = Math.min(60000, lifetime / 4);
    const delay = Math.max(1000, session.expires_at - early - Date.now());
    timer = setTimeout(() => {
      refresh(load()).catch((e) => {
        if (!(e instanceof SignedOut)) schedule({ ...load(), expires_at: Date.now() + 10000 + early });
      });
    }, delay);
  }

  async function problem(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      /* not JSON: the status says it */
    }
    return new ApiProblem(response.status, body);
  }

  // Refresh tokens rotate, and one presented twice revokes the session: so one tab at a time refreshes
  // (Web Locks; absent outside secure contexts), and a tab that waited takes the token another made.
  async function refresh(stale) {
    const run = async () => {
      const current = load();
      if (!current) throw new SignedOut("You are signed out.");
      if (stale && current.refresh_token !== stale.refresh_token) return current;
      const response = await fetch("/api/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ refresh_token: current.refresh_token }),
      });
      if (response.status === 400 || response.status === 401 || response.status === 403) {
        const p = await problem(response);
        end(`Your session has ended (${p.message}). Sign in again.`);
        throw new SignedOut(p.message);
      }
      if (!response.ok) throw await problem(response);
      const session = fromLogin(await response.json());
      store(session);
      return session;
    };
    return navigator.locks ? navigator.locks.request("chunkd-refresh", run) : run();
  }

  async function accessToken() {
    let session = load();
    if (!session) throw new SignedOut("You are signed out.");
    if (Date.now() > session.expires_at - 5000) session = await refresh(session);
    return session.access_token;
  }

  async function api(path, { method = "GET", body, auth = true, raw = false } = {}) {
    for (let attempt = 0; ; attempt++) {
      const headers = { Accept: "application/json" };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const session = auth ? load() : null;
      if (auth) headers.Authorization = `Bearer ${await accessToken()}`;
      const response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (response.status === 401 && auth && attempt === 0) {
        await refresh(session); // the access token was refused early (revoked, clock skew): once more
        continue;
      }
      if (response.status === 401 && auth) {
        const p = await problem(response);
        end(`Your session has ended (${p.message}). Sign in again.`);
        throw new SignedOut(p.message);
      }
      if (!response.ok) throw await problem(response);
      if (raw) return response;
      return response.status === 204 ? null : response.json();
    }
  }

  async function signIn(email, password) {
    const body = await api("/api/auth/login", { method: "POST", body: { email, password }, auth: false });
    store(fromLogin(body));
    return body.user;
  }

  async function register(email, password, name) {
    const body = await api("/api/auth/register", {
      method: "POST",
      body: { email, password, name: name || null },
      auth: false,
    });
    store(fromLogin(body));
    return body.user;
  }

  async function signOut() {
    try {
      await api("/api/auth/logout", { method: "POST" });
    } finally {
      end("You are signed out.");
    }
  }

  // The current session's user, or null; a stored session is refreshed (so also checked) when stale.
  function current() {
    const session = load();
    if (session) schedule(session);
    return session && session.user;
  }

  // Another tab signed in or out.
  window.addEventListener("storage", (event) => {
    if (event.key !== KEY) return;
    if (event.newValue === null) for (const listener of listeners) listener("You signed out in another tab.");
    else schedule(load());
  });

  const UNITS = ["B", "KB", "MB", "GB", "TB"];
  function bytes(n) {
    if (n === null || n === undefined) return "–";
    let i = 0;
    let v = Number(n);
    while (v >= 1000 && i < UNITS.length - 1) {
      v /= 1000;
      i++;
    }
    return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${UNITS[i]}`;
  }

  const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  function when(iso) {
    return iso ? dateTime.format(new Date(iso)) : "–";
  }

  const integer = new Intl.NumberFormat();
  function count(n) {
    return integer.format(n);
  }

  // el("li", {class: "x", dataset: {id}}, child, "text", ...)
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "dataset") Object.assign(node.dataset, value);
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function notice(message) {
    const box = document.getElementById("notice");
    box.textContent = message || "";
    box.hidden = !message;
  }

  return {
    ApiProblem,
    SignedOut,
    api,
    accessToken,
    signIn,
    register,
    signOut,
    current,
    onSignedOut: (f) => listeners.add(f),
    bytes,
    when,
    count,
    el,
    notice,
  };
})();
