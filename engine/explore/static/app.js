// latent-engine explore: the page's logic. Plain JavaScript, no library: it asks the server's JSON API for
// the store, its directions and rendered grids, and re-renders whenever a slider or a control moves.
"use strict";

const state = {
  store: null,
  directions: {},          // "METHOD/NAME" -> its description from /api/directions
  picked: [],              // [{direction: "METHOD/NAME:ROW", key, row, alpha, first, last}]
  inFlight: false,
  dirty: false,
  lastPayload: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function showMessage(text) {
  $("message").textContent = text || "";
  $("message").hidden = !text;
}

// ------------------------------------------------------------------ loading
async function waitForModels() {
  for (;;) {
    const status = await api("/api/status");
    $("loading-stage").textContent = `${status.stage} (${status.done}/${status.total}, ${status.seconds} s)`;
    $("loading-bar").max = status.total;
    $("loading-bar").value = status.done;
    if (status.error) {
      $("loading-error").textContent = `The generator could not be loaded: ${status.error}`;
      $("loading-error").hidden = false;
      return false;
    }
    if (status.ready) {
      $("loading").hidden = true;
      return true;
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}

// ------------------------------------------------------------------ directions list
function renderDirections(groups) {
  const box = $("directions");
  box.replaceChildren();
  if (!groups.length) {
    box.append(el("p", { class: "muted", id: "no-directions" }, "This store holds no directions" +
      (state.store && state.store.inverted ? ": explore it with --direction-from a sampled store of the same " +
        "generator." : ".")));
  }
  for (const group of groups) {
    const details = el("details", { open: true, "data-method": group.method },
      el("summary", {}, `${group.title} (${group.directions.length})`));
    for (const d of group.directions) {
      state.directions[d.key] = d;
      const pick = (r) => {
        const value = `${d.key}:${r}`;
        const box = el("input", { type: "checkbox", value, disabled: !d.editable, "data-direction": value });
        box.addEventListener("change", () => togglePick(box, d, r));
        return box;
      };
      const name = el("span", { class: "key" }, d.key);
      const item = el("div", { class: "direction" + (d.editable ? "" : " disabled"), "data-key": d.key },
        d.rows === 1 ? el("label", {}, pick(0), " ", name) : name, " ",
        el("span", { class: "muted" }, `in ${d.label}${d.rows > 1 ? `, ${d.rows} ${d.row_label}s` : ""}`),
        el("span", { class: "metric" }, d.editable ? d.metric : d.note || "not editable here"));
      if (d.rows > 1) {
        const rows = el("div", { class: "rows" });
        for (let r = 0; r < d.rows; r++) rows.append(el("label", {}, pick(r), ` ${r}`));
        item.append(rows);
      }
      details.append(item);
    }
    box.append(details);
  }
}

function filterDirections() {
  const text = $("filter").value.trim().toLowerCase();
  for (const item of document.querySelectorAll(".direction")) {
    item.hidden = text !== "" && !item.dataset.key.toLowerCase().includes(text);
  }
}

function togglePick(box, d, row) {
  const limit = state.store.limits.moves;
  if (box.checked) {
    if (state.picked.length >= limit) {
      box.checked = false;
      showMessage(`At most ${limit} directions at once: untick one first.`);
      return;
    }
    const numWs = state.store.num_ws || 1;
    state.picked.push({ direction: box.value, key: d.key, row, alpha: 0, first: 0, last: numWs - 1,
                        layered: d.w_sized && numWs > 1 });
  } else {
    state.picked = state.picked.filter((p) => p.direction !== box.value);
  }
  showMessage("");
  renderSliders();
  requestRender();
}

// ------------------------------------------------------------------ sliders
function renderSliders() {
  const box = $("sliders");
  box.replaceChildren();
  if (!state.picked.length) {
    box.append(el("p", { class: "muted" }, "No direction picked yet: tick one on the left."));
    return;
  }
  const limit = Math.min(5, state.store.limits.alpha);
  for (const p of state.picked) {
    const output = el("output", {}, `${p.alpha.toFixed(1)}σ`);
    const slider = el("input", { type: "range", min: -limit, max: limit, step: 0.1, value: p.alpha,
                                 class: "alpha", "data-direction": p.direction,
                                 "aria-label": `α along ${p.direction}` });
    slider.addEventListener("input", () => {
      p.alpha = Number(slider.value);
      output.textContent = `${p.alpha.toFixed(1)}σ`;
      requestRender();
    });
    const layers = el("span", { class: "layers" });
    if (p.layered) {
      const numWs = state.store.num_ws;
      const first = el("input", { type: "number", min: 0, max: numWs - 1, value: p.first, title: "first layer" });
      const last = el("input", { type: "number", min: 0, max: numWs - 1, value: p.last, title: "last layer" });
      const update = () => { p.first = Number(first.value); p.last = Number(last.value); requestRender(); };
      first.addEventListener("change", update);
      last.addEventListener("change", update);
      layers.append("layers ", first, "–", last);
    }
    const remove = el("button", { type: "button", title: "remove" }, "×");
    remove.addEventListener("click", () => {
      const box = document.querySelector(`input[type=checkbox][data-direction="${CSS.escape(p.direction)}"]`);
      if (box) box.checked = false;
      state.picked = state.picked.filter((q) => q !== p);
      renderSliders();
      requestRender();
    });
    box.append(el("div", { class: "slider" }, el("span", { class: "name" }, p.direction), slider, output, layers,
                  remove));
  }
}

// ------------------------------------------------------------------ requests
function parseRows(text) {
  const rows = [];
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const match = part.match(/^(\d+)(?:-(\d+))?$/);
    if (!match) throw new Error(`rows: cannot read "${part}" (use e.g. 0-7 or 3,10,42)`);
    const first = Number(match[1]), last = Number(match[2] ?? match[1]);
    for (let r = first; r <= last && rows.length <= state.store.limits.samples; r++) rows.push(r);
  }
  return rows;
}

function moveOf(p) {
  const move = { direction: p.direction, alpha: p.alpha };
  if (p.layered && !(p.first === 0 && p.last === state.store.num_ws - 1)) move.layers = `${p.first}-${p.last}`;
  return move;
}

function payload() {
  const body = {};
  if (document.querySelector("input[name=pick]:checked").value === "rows") body.rows = parseRows($("rows").value);
  else body.random = { count: Number($("count").value), seed: Number($("seed").value) };
  const side = document.querySelector("input[name=layout]:checked").value === "side";
  if (!state.picked.length) body.panels = [[]];
  else if (side) body.panels = state.picked.map((p) => [moveOf(p)]);
  else body.panels = [state.picked.map(moveOf)];
  return body;
}

function panelCaption(panel) {
  if (!panel.length) return "no move";
  return panel.map((m) => `${m.direction} α = ${m.alpha.toFixed(1)}σ${m.layers ? ` (layers ${m.layers})` : ""}`)
    .join(" + ");
}

function requestRender() {
  state.dirty = true;
  if (!state.inFlight) sendRender();
}

async function sendRender() {
  state.dirty = false;
  let body;
  try {
    body = payload();
  } catch (error) {
    showMessage(error.message);
    return;
  }
  state.inFlight = true;
  const started = performance.now();
  try {
    const result = await api("/api/render", { method: "POST", headers: { "Content-Type": "application/json" },
                                              body: JSON.stringify(body) });
    state.lastPayload = body;
    showResult(body, result, performance.now() - started);
    showMessage("");
  } catch (error) {
    showMessage(error.message);
  } finally {
    state.inFlight = false;
    if (state.dirty) sendRender();
  }
}

function showResult(body, result, ms) {
  $("original").src = result.original;
  $("rows-used").textContent = `rows ${result.rows.join(", ")}`;
  $("targets-figure").hidden = !result.targets;
  if (result.targets) {
    $("targets").src = result.targets;
    $("inversion-error").textContent = result.inversion_error
      ? `reconstruction error ${result.inversion_error.map((e) => e.toFixed(3)).join(", ")}` : "";
  }
  const box = $("panels");
  while (box.children.length > result.panels.length) box.lastChild.remove();
  result.panels.forEach((panel, i) => {
    let figure = box.children[i];
    if (!figure) {
      figure = el("figure", { class: "panel" }, el("img", { id: `panel-${i}`, alt: `edited grid ${i}` }),
        el("figcaption", {}), el("div", { class: "panel-tools" }), el("div", { class: "scores" }));
      box.append(figure);
    }
    figure.querySelector("img").src = panel.image;
    figure.querySelector("figcaption").textContent = panelCaption(body.panels[i]);
    const tools = figure.querySelector(".panel-tools");
    const png = el("a", { href: panel.image, download: `explore_grid${i}.png` }, "download grid PNG");
    const codes = el("a", { href: "#" },   // a store with noise maps: the codes and the maps that re-generate them
      state.store.noise_maps ? "download codes + noise maps .npz" : "download codes .npy");
    codes.addEventListener("click", (event) => { event.preventDefault(); downloadCodes(body, i); });
    tools.replaceChildren(png, codes);
    figure.querySelector(".scores").replaceChildren(scoresTable(panel.scores));
  });
  $("timing").textContent = `rendered in ${ms.toFixed(0)} ms (round trip)`;
}

function scoresTable(scores) {
  if (!scores.length) {
    const why = state.store.predictor_error ? ` (they could not be loaded: ${state.store.predictor_error})` : "";
    return el("span", { class: "muted" }, `no predictors to re-score with${why}`);
  }
  const table = el("table", { class: "scores" },
    el("tr", {}, el("th", {}, "attribute"), el("th", {}, "Δ / std"), el("th", {}, "mean before → after")));
  for (const s of scores.slice(0, 8)) {
    const rel = s.change_std === null ? "–" : `${s.change_std >= 0 ? "+" : ""}${s.change_std.toFixed(2)}`;
    table.append(el("tr", { class: s.change > 0 ? "up" : s.change < 0 ? "down" : "" },
      el("td", {}, s.attribute), el("td", { class: "num change" }, rel),
      el("td", { class: "num" }, `${s.before.toPrecision(3)} → ${s.after.toPrecision(3)}`)));
  }
  return table;
}

async function downloadCodes(body, panel) {
  const response = await fetch(`/api/codes?panel=${panel}`, { method: "POST",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!response.ok) {
    showMessage((await response.json()).error);
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const npz = (response.headers.get("Content-Disposition") || "").endsWith(".npz");   // codes + noise maps
  const link = el("a", { href: url, download: `explore_codes${panel}.${npz ? "npz" : "npy"}` });
  document.body.append(link);
  link.click();
  link.remove();
  URL.revokeObjectURL(url);
}

// ------------------------------------------------------------------ start
async function main() {
  const ready = await waitForModels();
  state.store = await api("/api/store");
  const s = state.store;
  $("store-line").textContent = `${s.path} · ${s.committed_rows} rows · ${s.spaces.join(", ")} · ` +
    `generator ${s.generator}` + (s.inverted ? " · inverted codes" : "") +
    (s.direction_from ? ` · directions from ${s.direction_from}` : "");
  if (s.note) $("store-note").textContent = `Note: ${s.note}.`;
  $("max-moves").textContent = s.limits.moves;
  $("count").max = Math.max(1, Math.min(s.limits.samples, s.committed_rows));   // an inverted store may be small
  $("count").value = Math.min(Number($("count").value), Number($("count").max));
  renderDirections(await api("/api/directions"));
  $("filter").addEventListener("input", filterDirections);
  for (const id of ["count", "seed", "rows"]) $(id).addEventListener("change", requestRender);
  for (const radio of document.querySelectorAll("input[name=pick], input[name=layout]")) {
    radio.addEventListener("change", requestRender);
  }
  $("reseed").addEventListener("click", () => { $("seed").value = Number($("seed").value) + 1; requestRender(); });
  if (ready) requestRender();
}

main().catch((error) => showMessage(error.message));
