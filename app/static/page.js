// The try-it page: builds a history from catalogue searches (or a stored user's), then shows every model's
// top-k side by side and the favourite-genre answer. Talks only to the service's /v1 API; shows API errors
// in the API's own words. DOM is built with textContent only (titles are data, never markup).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = "llmrec-api-key";
  const state = {
    key: sessionStorage.getItem(KEY_STORE) || "",
    models: [], // GET /v1/models entries that recommend
    defaultModel: null,
    history: [], // {item_id, title, timestamp|null}, oldest first
    answers: {}, // model name -> {data, ms} | {error}
    generation: 0, // a newer history makes older answers stale
    searchSeq: 0,
    pending: 0,
  };

  class ApiError extends Error {
    constructor(status, type, message) {
      super(message);
      this.status = status;
      this.type = type;
    }
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "class") node.className = value;
      else if (name === "data") Object.entries(value).forEach(([k, v]) => (node.dataset[k] = String(v)));
      else if (name === "on") Object.entries(value).forEach(([k, f]) => node.addEventListener(k, f));
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function busy(delta) {
    state.pending += delta;
    document.body.dataset.pending = String(state.pending);
  }

  // One API call: JSON in and out, the key when one is set, the client-side latency, the API's error words.
  async function api(method, path, body) {
    const headers = {};
    if (state.key) headers["X-API-Key"] = state.key;
    if (body !== undefined) headers["content-type"] = "application/json";
    busy(+1);
    const started = performance.now();
    try {
      let response;
      try {
        response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      } catch (err) {
        throw new ApiError(0, "network_error", `cannot reach the service (${err.message})`);
      }
      const ms = performance.now() - started;
      const data = await response.json().catch(() => null);
      if (!response.ok) {
        const error = data && data.error ? data.error : { type: `http_${response.status}`, message: response.statusText };
        if (response.status === 401) showAuth(error.message);
        throw new ApiError(response.status, error.type, error.message);
      }
      return { data, ms };
    } finally {
      busy(-1);
    }
  }

  function errorNode(err, id) {
    const props = { class: "error", data: { type: err.type || "error" } };
    if (id) props.id = id;
    return el("p", props, el("strong", {}, err.type || "error"), err.message);
  }

  // ---- API key -------------------------------------------------------------------------------------------
  function showAuth(message) {
    $("auth").hidden = false;
    $("auth-error").textContent = message;
  }

  $("auth").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value.trim();
    sessionStorage.setItem(KEY_STORE, state.key);
    start();
  });

  // ---- models --------------------------------------------------------------------------------------------
  async function loadModels() {
    const { data } = await api("GET", "/v1/models");
    $("auth").hidden = true;
    state.models = data.models.filter((m) => m.recommends);
    state.defaultModel = data.default_model;
    $("bundle").textContent =
      `bundle ${data.bundle_version} · models ${state.models.map((m) => m.name).join(", ")} · ` +
      `default ${data.default_model} (${data.default_reason})`;
  }

  // ---- search --------------------------------------------------------------------------------------------
  let searchTimer = null;
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(search, 200);
  });

  async function search() {
    const query = $("search").value.trim();
    const seq = ++state.searchSeq;
    const info = $("search-info");
    try {
      const { data } = await api("GET", `/v1/items?query=${encodeURIComponent(query)}&limit=25`);
      if (seq !== state.searchSeq) return;
      const shown = data.items.length;
      const what = query ? `${data.total} match${data.total === 1 ? "" : "es"}` : "most popular";
      info.replaceChildren(data.total > shown && query ? `${what}, showing ${shown}` : what);
      $("results").replaceChildren(
        ...data.items.map((item) =>
          el(
            "li",
            {},
            el(
              "button",
              { type: "button", class: "result", data: { itemId: item.item_id }, title: `add item ${item.item_id}`, on: { click: () => addItem(item) } },
              item.title,
              el("span", { class: "genres" }, `#${item.item_id} · ${item.genres.join(", ") || "no genre"}`),
            ),
          ),
        ),
      );
    } catch (err) {
      if (seq !== state.searchSeq) return;
      $("results").replaceChildren();
      info.replaceChildren(errorNode(err));
    }
  }

  // ---- history -------------------------------------------------------------------------------------------
  function addItem(item) {
    state.history.push({ item_id: item.item_id, title: item.title, timestamp: null });
    historyChanged();
  }

  function removeAt(index) {
    state.history.splice(index, 1);
    historyChanged();
  }

  $("clear").addEventListener("click", () => {
    state.history = [];
    historyChanged();
  });

  $("k").addEventListener("change", refresh);

  function renderHistory() {
    const n = state.history.length;
    $("history-count").textContent = n ? `(${n} item${n === 1 ? "" : "s"})` : "(empty)";
    $("history").replaceChildren(
      ...state.history.map((h, index) =>
        el(
          "li",
          { data: { itemId: h.item_id } },
          el("span", { class: "title" }, h.title),
          el("button", { type: "button", class: "remove", "aria-label": `remove ${h.title}`, title: "remove", on: { click: () => removeAt(index) } }, "×"),
        ),
      ),
    );
  }

  function historyChanged() {
    renderHistory();
    refresh();
  }

  $("user-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const userId = $("user-id").value.trim();
    const info = $("user-info");
    info.replaceChildren("loading…");
    try {
      const { data } = await api("GET", `/v1/users/${encodeURIComponent(userId)}/history`);
      if (!data.events.length) {
        info.replaceChildren(`user ${userId} has no stored history`);
        return;
      }
      const ids = [...new Set(data.events.map((e) => e.item_id))];
      const titles = new Map(await Promise.all(ids.map(async (id) => [id, await titleOf(id)])));
      state.history = data.events.map((e) => ({ item_id: e.item_id, title: titles.get(e.item_id), timestamp: e.timestamp }));
      info.replaceChildren(`loaded ${data.events.length} events of user ${userId}`);
      historyChanged();
    } catch (err) {
      info.replaceChildren(errorNode(err, "user-error"));
    }
  });

  async function titleOf(itemId) {
    try {
      return (await api("GET", `/v1/items/${itemId}`)).data.title;
    } catch (err) {
      if (err.status === 404) return `item ${itemId} (not in this bundle)`;
      throw err;
    }
  }

  // ---- answers -------------------------------------------------------------------------------------------
  function requestHistory() {
    return state.history.map((h) => (h.timestamp === null ? h.item_id : { item_id: h.item_id, timestamp: h.timestamp }));
  }

  function refresh() {
    const generation = ++state.generation;
    state.answers = {};
    const history = requestHistory();
    $("hint").hidden = history.length > 0;
    if (!history.length) {
      $("models").replaceChildren();
      $("genre-chart").replaceChildren();
      $("explanation").textContent = "";
      $("genre-meta").replaceChildren();
      return;
    }
    const k = Math.min(100, Math.max(1, Number.parseInt($("k").value, 10) || 10));
    renderColumns();
    for (const model of state.models) {
      api("POST", "/v1/recommend", { history, k, model: model.name })
        .then((answer) => answer, (error) => ({ error }))
        .then((answer) => {
          if (generation !== state.generation) return;
          state.answers[model.name] = answer;
          renderColumns();
        });
    }
    explain(history, generation);
  }

  function ranksOf(name) {
    const answer = state.answers[name];
    const ranks = new Map();
    if (answer && answer.data) answer.data.items.forEach((item, i) => ranks.set(item.item_id, i + 1));
    return ranks;
  }

  function renderColumns() {
    const ranks = Object.fromEntries(state.models.map((m) => [m.name, ranksOf(m.name)]));
    $("models").replaceChildren(...state.models.map((m) => column(m, ranks)));
  }

  function column(model, ranks) {
    const answer = state.answers[model.name];
    const isDefault = model.name === state.defaultModel;
    const head = el("h3", {}, model.name, isDefault ? el("span", { class: "badge", title: "answers requests that name no model" }, "default") : null);
    const stateName = !answer ? "loading" : answer.error ? "error" : "ready";
    const node = el("div", { class: "model-column", data: { model: model.name, default: isDefault, state: stateName } }, head);
    if (!answer || answer.error) {
      node.append(answer ? errorNode(answer.error) : el("p", { class: "meta" }, "asking…"));
      return node;
    }
    const data = answer.data;
    node.append(meta(data, answer.ms, model.name));
    const others = state.models.map((m) => m.name).filter((name) => name !== model.name);
    const rows = data.items.map((item, i) =>
      el(
        "li",
        { class: "rec", data: { itemId: item.item_id, rank: i + 1 } },
        el("span", { class: "title" }, item.title),
        el("span", { class: "score", title: "score" }, item.score.toFixed(4)),
        ...others.map((other) => {
          const rank = ranks[other].get(item.item_id);
          const data = rank ? { model: other, rank } : { model: other };
          return el("span", { class: "other", title: `${other}'s rank of this item`, data }, `${other} ${rank ? "#" + rank : "–"}`);
        }),
      ),
    );
    node.append(el("ol", { class: "recs" }, ...rows));
    if (!rows.length) node.append(el("p", { class: "muted small" }, "no items left after filters"));
    return node;
  }

  function meta(data, ms, asked) {
    const parts = [
      el("span", { class: "latency", title: "round trip (server total)" }, `${Math.round(ms)} ms (server ${Math.round(data.timing_ms.total ?? 0)} ms)`),
      el("span", { class: "cache", data: { cacheHit: data.cache_hit } }, data.cache_hit ? "cache hit" : "cache miss"),
      el(
        "span",
        { class: "degraded", data: { degraded: data.degraded }, title: data.degraded_reason || "" },
        data.degraded ? `degraded: ${data.degraded_reason}` : "not degraded",
      ),
    ];
    if (data.model && data.model !== asked) parts.splice(0, 0, el("span", { class: "ranked-by" }, `ranked by ${data.model}`));
    return el("p", { class: "meta" }, ...parts);
  }

  async function explain(history, generation) {
    let answer;
    try {
      answer = await api("POST", "/v1/explain/genre", { history, top_n: 5 });
    } catch (error) {
      if (generation !== state.generation) return;
      $("genre-chart").replaceChildren(errorNode(error, "genre-error"));
      $("explanation").textContent = "";
      $("genre-meta").replaceChildren();
      return;
    }
    if (generation !== state.generation) return;
    const { data, ms } = answer;
    const top = Math.max(...data.genres.map((g) => g.score), 1e-12);
    $("genre-chart").replaceChildren(
      ...data.genres.map((g) => {
        const bar = el("div", { class: "bar" });
        bar.style.width = `${Math.max(0, (100 * g.score) / top).toFixed(1)}%`;
        return el(
          "div",
          { class: "genre-row", data: { genre: g.name, score: g.score } },
          el("span", { class: "name" }, g.name),
          el("div", { class: "bar-track" }, bar),
          el("span", { class: "value" }, g.score.toFixed(3)),
        );
      }),
    );
    $("explanation").textContent = data.explanation;
    $("genre-meta").replaceChildren(meta(data, ms, null), `source: ${data.source}`);
  }

  // ---- start ---------------------------------------------------------------------------------------------
  async function start() {
    try {
      await loadModels();
    } catch (err) {
      if (err.status !== 401) $("bundle").replaceChildren(errorNode(err));
      return;
    }
    search();
    refresh();
  }

  start();
})();
