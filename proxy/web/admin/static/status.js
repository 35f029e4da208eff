// resilience-proxy status page. Served by the sidecar itself; no framework, no build step.
// Live data comes from GET /admin/stream (Server-Sent Events): "snapshot" on connect, then
// "transition" as breakers change and "stats" about every second. Actions POST to the admin
// API with the admin token as a Bearer header; the token is kept in sessionStorage (this tab only).
"use strict";

(() => {
  const TOKEN_KEY = "resilience-proxy.admin-token";
  const KEEP_TRANSITIONS = 50;
  const STATE_LABELS = {closed: "closed", open: "open", half_open: "half-open", forced_open: "forced open",
                        disabled: "disabled"};
  const $ = (id) => document.getElementById(id);

  let doc = null;            // the last status document
  let skew = 0;              // sidecar clock minus this browser's, in seconds
  let source = null;
  let retryTimer = null;
  let lastMessage = 0;

  // -- time, as people read it -------------------------------------------------------------------

  const now = () => Date.now() / 1000 + skew;

  function span(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return `${seconds}s`;
    const m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return s ? `${m}m ${s}s` : `${m}m`;
    const h = Math.floor(m / 60), mm = m % 60;
    if (h < 24) return mm ? `${h}h ${mm}m` : `${h}h`;
    const d = Math.floor(h / 24), hh = h % 24;
    return hh ? `${d}d ${hh}h` : `${d}d`;
  }
  const ago = (t) => (t ? `${span(now() - t)} ago` : "–");
  const until = (t) => `in ${span(t - now())}`;

  // -- numbers ------------------------------------------------------------------------------------

  const rate = (x) => (x === null || x === undefined ? "–" : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const percent = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(x >= 0.1 ? 0 : 1)}%`);
  const millis = (x) => (x === null || x === undefined ? "–" : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(x >= 100 ? 0 : 1)} ms`);

  // -- DOM helpers (text only: nothing from the document is ever parsed as HTML) ------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-") || key === "title" || key === "type") node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }
  const cell = (label, props) => el("td", {...props, "data-label": label});

  // -- rendering ----------------------------------------------------------------------------------

  // Rows are kept by key and updated in place, so a button under the pointer is never replaced
  // while it is being clicked; the table is rebuilt only when its set of rows changes.
  function syncRows(tbody, items, keyOf, make, update) {
    const existing = new Map([...tbody.rows].map((tr) => [tr.dataset.key, tr]));
    const rows = items.map((item) => {
      const key = keyOf(item);
      let tr = existing.get(key);
      if (!tr) {
        tr = make(item);
        tr.dataset.key = key;
      }
      update(tr, item);
      return tr;
    });
    if (rows.length !== tbody.rows.length || rows.some((tr, i) => tbody.rows[i] !== tr)) tbody.replaceChildren(...rows);
  }

  function fill(td, ...children) {
    td.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
  }

  function breakerButtons(route) {
    const name = `${route.upstream}/${route.route}`;
    const button = (action, label) => el("button", {
      type: "button", "data-action": action, "data-breaker": name,
      onclick: () => act(`${label} breaker ${name}?`, "POST",
        `/admin/breakers/${encodeURIComponent(route.upstream)}/${encodeURIComponent(route.route)}/${action}`,
        JSON.stringify({by: "status page"})),
    }, label);
    return el("div", {class: "actions"}, button("force-open", "Force open"), button("disable", "Disable"),
              button("reset", "Reset"));
  }

  const ROUTE_COLUMNS = ["Upstream", "Route", "Breaker", "req/s", "Errors", "p50", "p99", "Retries/s", "Limited/s",
                         "Actions"];
  const OPTIONAL = new Set(["p50", "Retries/s"]);  // left out on narrower screens (status.css)

  function makeRouteRow(r) {
    const tr = el("tr", {"data-breaker": `${r.upstream}/${r.route}`}, ...ROUTE_COLUMNS.map((label, i) =>
      cell(label, {class: i >= 3 && i <= 8 ? `num${OPTIONAL.has(label) ? " opt" : ""}` : null})));
    if (r.breaker) tr.cells[9].append(breakerButtons(r));
    return tr;
  }

  function updateRouteRow(tr, r, first) {
    const b = r.breaker;
    tr.dataset.state = b ? b.state : "none";
    tr.classList.toggle("upstream-first", first);
    const c = tr.cells;
    c[0].textContent = r.upstream;
    c[1].textContent = r.route;
    if (!b) {
      fill(c[2], el("span", {class: "pill state-none"}, "none"));
    } else {
      let detail = "";
      if (b.state === "open" && b.open_until) detail = b.open_until - now() >= 0.5 ? `probe ${until(b.open_until)}` : "probe due";
      else if (b.state === "half_open") detail = `${b.probes_in_flight} probe${b.probes_in_flight === 1 ? "" : "s"} in flight`;
      else if (b.forced_by) detail = `by ${b.forced_by}`;
      fill(c[2], el("div", {class: "breaker"},
        el("span", {class: `pill state-${b.state}`}, STATE_LABELS[b.state] || b.state),
        b.since ? el("span", {class: "reason when"}, `since ${ago(b.since)}`) : null,
        detail ? el("span", {class: "reason"}, detail) : null,
        b.reason && b.state !== "closed" ? el("span", {class: "reason"}, b.reason) : null));
      // Only what can change the state: reset a breaker that is not closed, force-open or disable one that is not.
      for (const button of c[9].querySelectorAll("button[data-action]")) {
        const action = button.dataset.action;
        button.hidden = (action === "reset" && b.state === "closed") || (action === "force-open" && b.state === "forced_open")
          || (action === "disable" && b.state === "disabled");
      }
    }
    c[3].textContent = rate(r.rps);
    c[4].textContent = percent(r.error_ratio);
    c[4].classList.toggle("hot", r.error_ratio >= 0.05);
    c[5].textContent = millis(r.p50_ms);
    c[6].textContent = millis(r.p99_ms);
    c[7].textContent = rate(r.retries_per_second);
    c[8].textContent = rate(r.limited_per_second);
    c[8].classList.toggle("hot", r.limited_per_second > 0);
  }

  function renderRoutes() {
    let previous = null;
    syncRows($("routes").tBodies[0], doc.routes, (r) => `${r.upstream}/${r.route}`, makeRouteRow, (tr, r) => {
      updateRouteRow(tr, r, previous !== null && r.upstream !== previous);
      previous = r.upstream;
    });
  }

  function renderLimits() {
    const limits = doc.routes.flatMap((r) => r.limits.map((l) => ({...l, upstream: r.upstream, route: r.route})));
    syncRows($("limits").tBodies[0], limits, (l) => `${l.upstream}/${l.route}/${l.name}`,
      () => el("tr", {}, ...["Upstream", "Route", "Limit", "Allowed", "Limited", "Shadow-limited"].map(
        (label, i) => cell(label, {class: i >= 3 ? "num" : null}))),
      (tr, l) => {
        const c = tr.cells;
        c[0].textContent = l.upstream;
        c[1].textContent = l.route;
        c[2].textContent = l.name;
        c[3].textContent = String(l.allowed);
        c[4].textContent = String(l.limited);
        c[4].classList.toggle("hot", l.limited > 0);
        c[5].textContent = String(l.shadow_limited);
      });
    $("limits").hidden = limits.length === 0;
    $("no-limits").hidden = limits.length !== 0;
  }

  function renderWebhooks() {
    const hooks = doc.webhooks || [];
    $("webhooks-section").hidden = hooks.length === 0;
    syncRows($("webhooks").tBodies[0], hooks, (w) => w.name,
      (w) => {
        const tr = el("tr", {"data-webhook": w.name}, ...["Webhook", "Waiting", "Oldest waiting", "Dead letters",
          "Completed", "Actions"].map((label, i) => cell(label, {class: i === 1 || i === 3 || i === 4 ? "num" : null})));
        tr.cells[5].append(el("button", {
          type: "button", "data-action": "replay", "data-webhook": w.name,
          onclick: () => act(`Replay every dead letter of webhook ${w.name}?`, "POST",
            `/admin/webhooks/${encodeURIComponent(w.name)}/replay?status=dead_letter`),
        }, "Replay dead letters"));
        return tr;
      },
      (tr, w) => {
        const c = tr.cells;
        c[0].textContent = w.name;
        if (!w.available) {
          for (const i of [1, 2, 3, 4]) c[i].textContent = "?";
          c[2].textContent = "the state backend does not answer";
          tr.dataset.dead = "0";
          return;
        }
        const dead = w.counts.dead_letter || 0;
        c[1].textContent = String(w.depth);
        c[2].textContent = w.oldest_pending_seconds === null ? "–" : `${span(w.oldest_pending_seconds)} old`;
        c[3].textContent = String(dead);
        c[3].classList.toggle("hot", dead > 0);
        tr.dataset.dead = String(dead);
        c[4].textContent = String(w.counts.completed || 0);
      });
  }

  function renderTransitions() {
    const list = doc.transitions || [];
    $("transitions").replaceChildren(...list.map((t) => el("li", {"data-to": t.to},
      el("span", {class: "when", title: new Date(t.at * 1000).toISOString()}, ago(t.at)),
      el("strong", {}, `${t.upstream}/${t.route}`),
      el("span", {}, el("span", {class: `state-${t.from}`}, STATE_LABELS[t.from] || t.from), " → ",
        el("span", {class: `state-${t.to}`}, STATE_LABELS[t.to] || t.to)),
      el("span", {class: "reason"}, `${t.reason}${t.by === "another replica" ? " (another replica)" : ""}`))));
    $("no-transitions").hidden = list.length !== 0;
  }

  function renderHeader() {
    const backend = doc.state_backend;
    const up = $("backend");
    up.textContent = backend.kind === "redis" ? `redis ${backend.up ? "up" : "down"}` : "memory (per process)";
    up.className = `pill ${backend.kind !== "redis" || backend.up ? "pill-ok" : "pill-bad"}`;
    $("breaker-scope").textContent = doc.scopes.breakers === "fleet" ? "fleet-wide, from the shared state"
      : "this process only (state.backend: memory)";
    $("pid").textContent = String(doc.pid);
    $("window").textContent = $("limits-window").textContent = String(Math.round(doc.window_seconds));
    $("generated").textContent = ago(doc.generated_at);
    const config = doc.config;
    $("config-version").textContent = config.version;
    $("config-loaded").textContent = ago(config.loaded_at);
    const last = config.last_reload;
    $("config-reload").textContent = last ? `${last.result === "ok" ? "applied" : "refused"} ${ago(last.at)} (${last.trigger})` : "none since start";
    $("config-reload").className = last && last.result !== "ok" ? "hot" : "";
    $("config-problems").replaceChildren(...(last ? last.problems : []).map((p) => el("li", {}, p)));
  }

  // Without admin.token on the sidecar every action is refused (403): say so on the buttons.
  function renderButtons() {
    const enabled = doc.admin.token_configured;
    for (const button of document.querySelectorAll("button[data-action]")) {
      const dead = button.dataset.action === "replay" && button.closest("tr").dataset.dead === "0";
      button.disabled = !enabled || dead;
      button.title = enabled ? "" : "admin actions are disabled on this sidecar: it has no admin.token";
    }
  }

  function render() {
    if (!doc) return;
    renderHeader();
    renderRoutes();
    renderLimits();
    renderWebhooks();
    renderTransitions();
    renderButtons();
  }

  // -- the stream ---------------------------------------------------------------------------------

  function setConnection(text, kind) {
    const pill = $("connection");
    pill.textContent = text;
    pill.className = `pill ${kind}`;
    document.body.classList.toggle("stale", kind === "pill-bad");
  }

  function received(document_) {
    skew = document_.generated_at - Date.now() / 1000;
    lastMessage = Date.now();
  }

  function connect() {
    clearTimeout(retryTimer);
    if (source) source.close();
    source = new EventSource("/admin/stream");
    source.addEventListener("snapshot", (event) => {
      doc = JSON.parse(event.data);
      received(doc);
      setConnection("live", "pill-ok");
      render();
    });
    source.addEventListener("stats", (event) => {
      const next = JSON.parse(event.data);
      next.transitions = doc ? doc.transitions : [];
      doc = next;
      received(doc);
      render();
    });
    source.addEventListener("transition", (event) => {
      if (!doc) return;
      const t = JSON.parse(event.data);
      const same = (o) => o.upstream === t.upstream && o.route === t.route && o.to === t.to && o.at === t.at;
      if (doc.transitions.some(same)) return;  // already in the snapshot it followed
      doc.transitions = [t, ...doc.transitions].slice(0, KEEP_TRANSITIONS);
      const route = doc.routes.find((r) => r.upstream === t.upstream && r.route === t.route);
      if (route && route.breaker) {
        Object.assign(route.breaker, {state: t.to, since: t.at, reason: t.reason, open_until: t.open_until,
                                      probes_in_flight: t.to === "half_open" ? 1 : 0,
                                      forced_by: null});
      }
      lastMessage = Date.now();
      render();
    });
    source.onopen = () => setConnection("live", "pill-ok");
    source.onerror = () => {
      setConnection("reconnecting…", "pill-bad");
      if (source.readyState === EventSource.CLOSED) {
        // The server answered with an error (a 503 while it starts or stops): EventSource gives up
        // on those, so start again ourselves.
        retryTimer = setTimeout(connect, 3000);
      }
    };
  }

  // A stream that stays silent (a network that dropped it without a reset) is restarted.
  setInterval(() => {
    render();  // the relative times move on between messages, and while the stream is down
    if (lastMessage && Date.now() - lastMessage > 20000) {
      lastMessage = Date.now();
      setConnection("reconnecting…", "pill-bad");
      connect();
    }
  }, 1000);

  // -- actions ------------------------------------------------------------------------------------

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  function showMode() {
    document.body.classList.toggle("has-token", Boolean(token()));
    document.body.classList.toggle("read-only", !token());
    $("mode").textContent = token() ? "admin token set for this tab" : "read-only: actions ask for the admin token";
  }

  function notice(text, kind) {
    const box = $("notice");
    box.textContent = text;
    box.className = `notice ${kind}`;
    box.hidden = false;
  }

  // Ask for confirmation (and the token); resolves to the token entered, or null when cancelled.
  function ask(question) {
    const dialog = $("confirm");
    $("confirm-text").textContent = question || "The admin token for this tab:";
    $("token-input").value = token();
    return new Promise((resolve) => {
      const done = (value) => {
        $("confirm-form").onsubmit = $("confirm-cancel").onclick = $("confirm-forget").onclick = null;
        dialog.close();
        resolve(value);
      };
      $("confirm-form").onsubmit = (event) => {
        event.preventDefault();
        const entered = $("token-input").value.trim();
        if (entered) sessionStorage.setItem(TOKEN_KEY, entered);
        showMode();
        done(entered);
      };
      $("confirm-cancel").onclick = () => done(null);
      $("confirm-forget").onclick = () => {
        sessionStorage.removeItem(TOKEN_KEY);
        showMode();
        done(null);
      };
      dialog.showModal();
      $("token-input").focus();
    });
  }

  async function act(question, method, url, body) {
    const entered = await ask(question);
    if (entered === null) return;
    const headers = {};
    if (entered) headers.Authorization = `Bearer ${entered}`;
    if (body) headers["Content-Type"] = "application/json";
    let response, answer;
    try {
      response = await fetch(url, {method, headers, body, credentials: "omit", cache: "no-store"});
      answer = await response.json().catch(() => ({}));
    } catch (error) {
      notice(`Could not reach the sidecar: ${error.message}`, "bad");
      return;
    }
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showMode();
      notice(`Refused (401): ${answer.message || "missing or wrong admin token"}.`, "bad");
    } else if (response.status === 403) {
      notice(`Refused (403): ${answer.message || "admin actions are disabled"}.`, "bad");
    } else if (!response.ok) {
      const problems = answer.problems && answer.problems.length ? `: ${answer.problems.join("; ")}` : "";
      notice(`Failed (${response.status}): ${answer.message || answer.result || "error"}${problems}`, "bad");
    } else {
      notice(describeResult(answer), "good");
    }
  }

  function describeResult(answer) {
    if (answer.transition) return `Done: ${STATE_LABELS[answer.transition.from] || answer.transition.from} → ${STATE_LABELS[answer.transition.to] || answer.transition.to}.`;
    if (answer.replayed !== undefined) return `Done: ${answer.replayed} event(s) queued again.`;
    if (answer.result) return `Config reload: ${answer.result === "ok" ? "applied" : answer.result} (version ${answer.version}).`;
    return "Done.";
  }

  $("reload-button").addEventListener("click", () => act("Reload the config files now?", "POST", "/admin/reload"));
  $("token-button").addEventListener("click", () => ask(null));
  showMode();
  connect();
})();
