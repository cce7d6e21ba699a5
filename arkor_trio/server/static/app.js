// arkor-trio live page: the job list, a job followed live over EventSource, notifications.
// Plain JavaScript served by the local backend itself (no build step, no CDN).
"use strict";
(function () {
  const ORG = "local";
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const LIST_EVERY_MS = 2000;
  const RESUMED_FOR_MS = 5000;
  const $ = (id) => document.getElementById(id);
  const baseTitle = document.title;

  const page = {
    project: "default",
    jobs: [],             // latest GET /v1/jobs
    statuses: new Map(),  // job id -> last status seen (to notice live transitions)
    announced: new Set(), // job ids already toasted
    listFailing: false,
    view: null,           // the followed job (see openJob)
    dropped: false,       // a connection dropped since the last "live"
    resumedTimer: 0,
    titleChanged: false,
    loading: new Set(),   // job ids whose sparkline the backend has not read to the end
    chart: loadChartOptions(),
  };

  // --- preferences (kept in localStorage) -------------------------------------------------------

  function loadChartOptions() {
    const out = { log: false, smoothing: 0.6 };
    try {
      const saved = JSON.parse(localStorage.getItem("arkor.chart") || "{}");
      if (typeof saved.log === "boolean") out.log = saved.log;
      if (typeof saved.smoothing === "number" && saved.smoothing >= 0 && saved.smoothing < 1) out.smoothing = saved.smoothing;
    } catch (e) { /* storage off or corrupt: defaults */ }
    return out;
  }

  function saveChartOptions() {
    try { localStorage.setItem("arkor.chart", JSON.stringify(page.chart)); } catch (e) { /* storage off */ }
  }

  // --- API ------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function scope(extra) {
    const q = new URLSearchParams({ orgSlug: ORG, projectSlug: page.project, ...(extra || {}) });
    return q.toString();
  }

  async function api(path, options) {
    const res = await fetch(path, { credentials: "same-origin", ...(options || {}),
      headers: { Accept: "application/json", ...((options && options.headers) || {}) } });
    if (res.status === 401) signedOut();
    if (!res.ok) {
      let message = `HTTP ${res.status}`;
      try { message = (await res.json()).error || message; } catch (e) { /* not JSON */ }
      throw new ApiError(res.status, message);
    }
    return res;
  }

  // --- connection state -----------------------------------------------------------------------

  function setConn(state) {
    const conn = $("conn");
    if (conn.dataset.state === "signed-out") return;
    clearTimeout(page.resumedTimer);
    if (state === "ok") {
      state = page.dropped ? "resumed" : "live";
      if (page.dropped) {
        page.dropped = false;
        page.resumedTimer = setTimeout(() => setConn("ok"), RESUMED_FOR_MS);
      }
    } else if (state === "reconnecting") {
      page.dropped = true;
    }
    conn.dataset.state = state;
    conn.textContent = state;
  }

  function streamHealthy() {
    return !page.view || page.view.done || page.view.open;
  }

  function signedOut() {
    $("signin").hidden = false;
    $("main").hidden = true;
    const conn = $("conn");
    conn.dataset.state = "signed-out";
    conn.textContent = "signed out";
  }

  // --- job list -------------------------------------------------------------------------------

  function ago(iso) {
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 60) return "just now";
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return new Date(iso).toLocaleDateString();
  }

  function badge(status) {
    const b = document.createElement("span");
    b.className = `badge ${status}`;
    b.textContent = status;
    return b;
  }

  async function refreshList() {
    try {
      const [jobsRes, lossRes] = await Promise.all([
        api(`/v1/jobs?${scope()}`), api(`/v1/local/losses?${scope()}`)]);
      const jobs = (await jobsRes.json()).jobs;
      const lossBody = await lossRes.json();
      const losses = lossBody.losses;
      page.loading = new Set(lossBody.loading || []);
      const first = !page.listLoaded;
      page.listLoaded = true;
      page.jobs = jobs;
      for (const job of jobs) {
        const before = page.statuses.get(job.id);
        if (!first && before !== undefined && !TERMINAL.has(before) && TERMINAL.has(job.status)) {
          announce(job);
        }
        page.statuses.set(job.id, job.status);
      }
      renderList(jobs, losses);
      // A queued job's note names what it waits behind: redraw it as the queue moves.
      if (page.view && page.view.job && page.view.job.status === "queued") scheduleRender();
      if (page.listFailing) { page.listFailing = false; }
      if (streamHealthy()) setConn("ok");
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return; // signed out: stop polling
      page.listFailing = true;
      setConn("reconnecting");
    }
    setTimeout(refreshList, document.hidden ? LIST_EVERY_MS * 3 : LIST_EVERY_MS);
  }

  function renderList(jobs, losses) {
    const body = $("job-list").tBodies[0];
    const rows = jobs.map((job) => {
      const tr = document.createElement("tr");
      tr.dataset.jobId = job.id;
      tr.dataset.status = job.status;
      if (page.view && page.view.id === job.id) tr.className = "selected";
      const status = tr.insertCell(); status.appendChild(badge(job.status));
      const name = tr.insertCell(); name.className = "name"; name.textContent = job.name; name.title = job.name;
      const created = tr.insertCell(); created.className = "created"; created.textContent = ago(job.createdAt);
      created.title = new Date(job.createdAt).toLocaleString();
      const spark = tr.insertCell(); spark.className = "spark-cell";
      spark.appendChild(window.ArkorChart.sparkline(losses[job.id] || [], page.loading.has(job.id) ? "loading" : "done"));
      tr.addEventListener("click", () => { location.hash = `#job=${encodeURIComponent(job.id)}&project=${encodeURIComponent(page.project)}`; });
      return tr;
    });
    body.replaceChildren(...rows);
    $("no-jobs").hidden = jobs.length > 0;
  }

  async function loadProjects() {
    try {
      const res = await api(`/v1/projects?orgSlug=${ORG}`);
      const projects = (await res.json()).projects;
      const select = $("project");
      select.replaceChildren(...projects.map((p) => new Option(p.slug, p.slug)));
      select.value = page.project;
    } catch (err) { /* the list poll shows the connection state */ }
  }

  // --- the followed job -----------------------------------------------------------------------

  function routeFromHash() {
    const q = new URLSearchParams(location.hash.slice(1));
    if (q.get("project")) page.project = q.get("project");
    $("project").value = page.project;
    const id = q.get("job");
    if (id && (!page.view || page.view.id !== id)) openJob(id);
    if (!id) closeJob();
  }

  function closeJob() {
    if (page.view) {
      page.view.closed = true;
      if (page.view.source) page.view.source.close();
      clearTimeout(page.view.retryTimer);
    }
    page.view = null;
    $("job").hidden = true;
    $("empty").hidden = false;
  }

  async function openJob(id) {
    closeJob();
    const view = page.view = {
      id, job: null, lastId: 0, train: [], evalPts: [], checkpoints: [], artifacts: [],
      last: {}, total: null, done: false, open: false, source: null, retries: 0,
      wasTerminal: false, retryTimer: 0, closed: false,
    };
    $("empty").hidden = true;
    $("job").hidden = false;
    $("answer").hidden = true;
    delete $("ask-adapter").dataset.picked;
    for (const tr of $("job-list").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.jobId === id);
    try {
      view.job = (await (await api(`/v1/jobs/${encodeURIComponent(id)}?${scope()}`)).json()).job;
    } catch (err) {
      if (view.closed) return;
      $("job-name").textContent = id;
      showError(`cannot load job ${id}: ${err.message}`);
      return;
    }
    if (view.closed) return;
    view.wasTerminal = TERMINAL.has(view.job.status);
    view.total = view.job.config && Number.isInteger(view.job.config.maxSteps) ? view.job.config.maxSteps : null;
    renderJob();
    connect(view);
  }

  function connect(view) {
    const extra = view.lastId ? { lastEventId: String(view.lastId) } : {};
    const source = view.source = new EventSource(`/v1/jobs/${encodeURIComponent(view.id)}/events/stream?${scope(extra)}`);
    const handle = (ev) => onEvent(view, ev);
    for (const type of ["training.started", "training.log", "checkpoint.saved",
      "training.completed", "training.failed", "training.cancelled"]) {
      source.addEventListener(type, handle);
    }
    source.addEventListener("end", () => {
      view.done = true;
      source.close();
      if (!page.listFailing) setConn("ok");
      scheduleRender();
    });
    source.onopen = () => {
      view.open = true;
      view.retries = 0;
      if (!page.listFailing) setConn("ok");
    };
    source.onerror = () => {
      source.close();
      view.open = false;
      if (view.done || view.closed) return;
      setConn("reconnecting");
      const delay = Math.min(4000, 250 * 2 ** view.retries++);
      view.retryTimer = setTimeout(() => { if (!view.closed) connect(view); }, delay);
    };
  }

  function onEvent(view, ev) {
    if (view.closed) return;
    const id = Number(ev.lastEventId);
    if (id && id <= view.lastId) return; // already drawn (a replay overlapping the resume point)
    if (id) view.lastId = id;
    let data;
    try { data = JSON.parse(ev.data); } catch (e) { return; }
    if (!data || typeof data !== "object") return;
    const job = view.job;
    let terminal = false;
    switch (data.type) {
      case "training.started": {
        job.status = job.status === "queued" ? "running" : job.status;
        job.startedAt = job.startedAt || data.timestamp;
        const settings = data.metadata && data.metadata.settings;
        if (settings && Number.isInteger(settings.maxSteps)) view.total = settings.maxSteps;
        view.meta = data.metadata || null;
        break;
      }
      case "training.log":
        if (typeof data.loss === "number") view.train.push([data.step, data.loss]);
        if (typeof data.evalLoss === "number") view.evalPts.push([data.step, data.evalLoss]);
        view.last = data;
        if (job.status === "queued") job.status = "running";
        break;
      case "checkpoint.saved":
        view.checkpoints.push({ step: data.step, artifacts: data.artifacts || [] });
        break;
      case "training.completed":
        job.status = "completed";
        terminal = true;
        view.artifacts = data.artifacts || [];
        break;
      case "training.failed":
        job.status = "failed";
        terminal = true;
        job.error = data.error;
        break;
      case "training.cancelled":
        job.status = "cancelled";
        terminal = true;
        break;
      default:
        return;
    }
    if (terminal) {
      job.completedAt = job.completedAt || data.timestamp;
      view.done = true;
      view.source.close();
      page.statuses.set(job.id, job.status);
      const row = document.querySelector(`#job-list tr[data-job-id="${CSS.escape(job.id)}"]`);
      if (row) { row.dataset.status = job.status; row.cells[0].replaceChildren(badge(job.status)); }
      if (!view.wasTerminal) announce(job);
    }
    scheduleRender();
  }

  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => { renderQueued = false; if (page.view) renderJob(); });
  }

  function stat(label, value) {
    const d = document.createElement("div");
    d.className = "stat";
    d.innerHTML = '<div class="k"></div><div class="v"></div>';
    d.firstChild.textContent = label;
    d.lastChild.textContent = value;
    return d;
  }

  function num(v, digits) {
    return typeof v === "number" ? (Math.abs(v) < 1e-3 && v !== 0 ? v.toExponential(2) : v.toFixed(digits)) : "–";
  }

  function renderJob() {
    const view = page.view, job = view.job;
    const section = $("job");
    section.dataset.jobId = job.id;
    section.dataset.status = job.status;
    // "done" once the stream delivered the terminal event (or its end): everything is drawn.
    section.dataset.followed = view.done ? "done" : "following";
    $("job-name").textContent = job.name;
    const meta = [`${job.id}`, `model ${job.config && job.config.model}`];
    if (view.meta && view.meta.engine) meta.push(`trained locally by ${view.meta.engine}`);
    meta.push(`created ${new Date(job.createdAt).toLocaleTimeString()}`);
    $("job-meta").textContent = meta.join(" · ");
    const b = $("job-status");
    b.className = `badge ${job.status}`;
    b.textContent = job.status;
    $("cancel").hidden = TERMINAL.has(job.status);
    if (job.status === "failed") showError(`failed: ${job.error || "unknown error"}`); else $("job-error").hidden = true;

    const step = view.last.step || 0;
    const total = view.total;
    const ratio = job.status === "completed" ? 1 : total ? Math.min(1, step / total) : 0;
    $("progress-fill").style.width = `${(ratio * 100).toFixed(1)}%`;
    const fmtC = window.ArkorChart.fmtCount;
    const pct = ratio > 0 && ratio < 0.1 ? (ratio * 100).toFixed(1) : (ratio * 100).toFixed(0);
    $("progress-text").textContent = total ? `step ${fmtC(step)} / ${fmtC(total)} · ${pct}%` : `step ${fmtC(step)}`;
    const lastEval = view.evalPts.length ? view.evalPts[view.evalPts.length - 1][1] : null;
    const lastLoss = view.train.length ? view.train[view.train.length - 1][1] : null;
    $("stats").replaceChildren(
      stat("step", total ? `${fmtC(step)} / ${fmtC(total)}` : fmtC(step)),
      stat("train loss", num(lastLoss, 4)),
      stat("eval loss", num(lastEval, 4)),
      stat("learning rate", num(view.last.learningRate, 4)),
      stat("samples / s", num(view.last.samplesPerSecond, 0)),
    );
    $("planned").textContent = total ? `steps 0–${window.ArkorChart.fmtCount(Math.max(step, 1))} of ${window.ArkorChart.fmtCount(total)} planned` : "";
    window.ArkorChart.lossChart($("chart"), view.train, view.evalPts, total, (s) => readout(view, s),
      { log: page.chart.log, smoothing: page.chart.smoothing, emptyNote: waitingNote(view) });
    renderCheckpoints(view);
    renderArtifacts(view);
  }

  // What an empty chart says: for a queued job, what it waits behind.
  function waitingNote(view) {
    const job = view.job;
    if (job.status !== "queued") return "waiting for the first logged step…";
    const running = page.jobs.filter((j) => j.status === "running" && j.id !== job.id);
    const ahead = page.jobs.filter((j) => j.status === "queued" && j.id !== job.id && j.createdAt < job.createdAt);
    const names = (jobs) => jobs.slice(0, 2).map((j) => `“${j.name}”`).join(", ") + (jobs.length > 2 ? ` and ${jobs.length - 2} more` : "");
    if (!running.length && !ahead.length) {
      return "queued: waiting for a free training slot (jobs train one at a time, across all projects)";
    }
    const parts = [];
    if (running.length) parts.push(`${running.length === 1 ? "the running job" : `${running.length} running jobs`} ${names(running)}`);
    if (ahead.length) parts.push(`${ahead.length} queued before it (${names(ahead)})`);
    return `queued behind ${parts.join(" and ")}`;
  }

  function readout(view, step) {
    if (step === null) { $("readout").textContent = ""; return; }
    const t = view.train.find((p) => p[0] === step), e = view.evalPts.find((p) => p[0] === step);
    let smooth = "";
    if (t && page.chart.smoothing > 0) {
      const i = view.train.indexOf(t);
      const s = window.ArkorChart.ema(view.train.slice(0, i + 1), page.chart.smoothing);
      smooth = ` (smoothed ${num(s[s.length - 1][1], 4)})`;
    }
    $("readout").textContent = `step ${window.ArkorChart.fmtCount(step)}` + (t ? ` · train ${num(t[1], 4)}${smooth}` : "") + (e ? ` · eval ${num(e[1], 4)}` : "");
  }

  function renderCheckpoints(view) {
    const list = $("checkpoints");
    const items = view.checkpoints.map((c) => {
      const li = document.createElement("li");
      li.dataset.step = c.step;
      li.innerHTML = "<span></span><span class=\"muted small\"></span>";
      li.firstChild.className = "ck-step";
      li.firstChild.textContent = `step ${window.ArkorChart.fmtCount(c.step)}`;
      li.lastChild.classList.add("ck-path");
      li.lastChild.textContent = c.artifacts.map((a) => (a && a.pathname) || "").filter(Boolean).join(", ");
      li.lastChild.title = li.lastChild.textContent;
      return li;
    });
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "none yet";
      items.push(li);
    }
    const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.replaceChildren(...items);
    if (stick) list.scrollTop = list.scrollHeight; // follow the newest, unless scrolled up
    $("checkpoint-count").textContent = view.checkpoints.length ? String(view.checkpoints.length) : "";
    const select = $("ask-adapter");
    const chosen = select.value;
    const options = view.checkpoints.map((c) => new Option(`checkpoint @ step ${window.ArkorChart.fmtCount(c.step)}`, `checkpoint:${c.step}`));
    if (view.job.status === "completed") options.push(new Option("final adapter", "final"));
    if (options.length !== select.options.length) {
      select.replaceChildren(...options);
      // The newest adapter, unless the user picked one.
      const keep = select.dataset.picked && [...select.options].some((o) => o.value === chosen);
      select.value = keep ? chosen : (options.length ? options[options.length - 1].value : "");
    }
    $("ask").hidden = options.length === 0;
  }

  function renderArtifacts(view) {
    const items = view.artifacts.map((a) => {
      const li = document.createElement("li");
      li.innerHTML = "<span class=\"path\"></span><span class=\"muted small\"></span>";
      li.firstChild.textContent = (a && a.pathname) || JSON.stringify(a);
      li.lastChild.textContent = a && typeof a.bytes === "number" ? `${(a.bytes / 1024).toFixed(0)} KiB` : "";
      return li;
    });
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = view.job.status === "completed" ? "none" : "when the run completes";
      items.push(li);
    }
    $("artifacts").replaceChildren(...items);
  }

  function showError(text) {
    const e = $("job-error");
    e.textContent = text;
    e.hidden = false;
  }

  // --- actions ----------------------------------------------------------------------------------

  let armTimer = 0;
  async function onCancel() {
    const button = $("cancel");
    const view = page.view;
    if (!view) return;
    if (!button.classList.contains("armed")) {
      button.classList.add("armed");
      button.textContent = "Confirm cancel";
      armTimer = setTimeout(() => { button.classList.remove("armed"); button.textContent = "Cancel run"; }, 4000);
      return;
    }
    clearTimeout(armTimer);
    button.classList.remove("armed");
    button.disabled = true;
    button.textContent = "Cancelling…";
    try {
      await api(`/v1/jobs/${encodeURIComponent(view.id)}/cancel?${scope()}`, { method: "POST" });
    } catch (err) {
      toast("info", "Cancel", err.message);
    } finally {
      button.disabled = false;
      button.textContent = "Cancel run";
    }
  }

  async function onAsk(ev) {
    ev.preventDefault();
    const view = page.view;
    const prompt = $("prompt").value.trim();
    const choice = $("ask-adapter").value;
    if (!view || !prompt || !choice) return;
    const adapter = choice === "final" ? { kind: "final", jobId: view.id }
      : { kind: "checkpoint", jobId: view.id, step: Number(choice.split(":")[1]) };
    const system = $("system-prompt").value.trim();
    const messages = (system ? [{ role: "system", content: system }] : []).concat([{ role: "user", content: prompt }]);
    const temperature = Number($("temperature").value);
    try { localStorage.setItem("arkor.ask", JSON.stringify({ system, temperature })); } catch (e) { /* storage off */ }
    const out = $("answer");
    out.hidden = false;
    out.textContent = "";
    out.dataset.state = "streaming";
    $("ask-send").disabled = true;
    try {
      const res = await api(`/v1/inference/chat?${scope()}`, {
        method: "POST", headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({ messages, adapter, stream: true, maxTokens: 160, temperature }),
      });
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, cut).replace(/\r$/, "");
          buffer = buffer.slice(cut + 1);
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          try {
            const chunk = JSON.parse(data);
            const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
            if (delta && typeof delta.content === "string") out.textContent += delta.content;
          } catch (e) { /* not a chunk */ }
        }
      }
      out.dataset.state = "done";
    } catch (err) {
      out.textContent = `error: ${err.message}`;
      out.dataset.state = "error";
    } finally {
      $("ask-send").disabled = false;
    }
  }

  // --- notifications ----------------------------------------------------------------------------

  const WORDS = { completed: ["✓", "completed"], failed: ["✗", "failed"], cancelled: ["■", "cancelled"] };

  function announce(job) {
    if (page.announced.has(job.id)) return;
    page.announced.add(job.id);
    const [mark, word] = WORDS[job.status] || ["•", job.status];
    const text = job.status === "failed" && job.error ? job.error : `job ${job.id}`;
    toast(job.status, `${job.name} ${word}`, text);
    document.title = `${mark} ${job.name} ${word} · arkor-trio`;
    page.titleChanged = true;
    if ("Notification" in window && Notification.permission === "granted") {
      try {
        new Notification(`arkor-trio: ${job.name} ${word}`, { body: text, tag: job.id });
      } catch (e) { /* some browsers only allow notifications from a service worker */ }
    }
  }

  function toast(kind, title, text) {
    const t = document.createElement("div");
    t.className = `toast ${kind}`;
    t.setAttribute("role", "status");
    t.innerHTML = '<div class="t-body"><div class="t-title"></div><div class="t-text"></div></div><button type="button" aria-label="dismiss">×</button>';
    t.querySelector(".t-title").textContent = title;
    t.querySelector(".t-text").textContent = text;
    t.querySelector("button").addEventListener("click", () => t.remove());
    $("toasts").appendChild(t);
    setTimeout(() => t.remove(), 12000);
  }

  function restoreTitle() {
    if (page.titleChanged) { document.title = baseTitle; page.titleChanged = false; }
  }

  function setupNotifyButton() {
    const button = $("notify-btn");
    if (!("Notification" in window)) return;
    const update = () => { button.hidden = Notification.permission !== "default"; };
    update();
    // Asked from a click only, never on load.
    button.addEventListener("click", async () => {
      try { await Notification.requestPermission(); } finally { update(); }
    });
  }

  function setupChartControls() {
    const log = $("log-scale"), smooth = $("smoothing"), shown = $("smoothing-value");
    log.checked = page.chart.log;
    smooth.value = String(page.chart.smoothing);
    shown.textContent = page.chart.smoothing.toFixed(2);
    log.addEventListener("change", () => { page.chart.log = log.checked; saveChartOptions(); scheduleRender(); });
    smooth.addEventListener("input", () => {
      page.chart.smoothing = Number(smooth.value);
      shown.textContent = page.chart.smoothing.toFixed(2);
      saveChartOptions();
      scheduleRender();
    });
  }

  function setupAskControls() {
    const temp = $("temperature"), shown = $("temperature-value");
    try {
      const saved = JSON.parse(localStorage.getItem("arkor.ask") || "{}");
      if (typeof saved.system === "string") $("system-prompt").value = saved.system;
      if (typeof saved.temperature === "number" && saved.temperature >= 0 && saved.temperature <= 2) temp.value = String(saved.temperature);
    } catch (e) { /* storage off or corrupt: defaults */ }
    const show = () => { shown.textContent = Number(temp.value).toFixed(1); };
    temp.addEventListener("input", show);
    show();
  }

  // --- start ------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("cancel").addEventListener("click", onCancel);
    $("ask").addEventListener("submit", onAsk);
    $("ask-adapter").addEventListener("change", () => { $("ask-adapter").dataset.picked = "1"; });
    $("project").addEventListener("change", () => {
      page.project = $("project").value;
      page.listLoaded = false;
      location.hash = `#project=${encodeURIComponent(page.project)}`;
    });
    window.addEventListener("hashchange", routeFromHash);
    for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, restoreTitle);
    setupNotifyButton();
    setupChartControls();
    setupAskControls();
    loadProjects().then(routeFromHash);
    refreshList();
  });
})();
