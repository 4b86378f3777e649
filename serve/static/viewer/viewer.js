// satpipe map viewer: the pinned outputs of this service (and, with ?compare=<URL>, of a second
// one, side by side) on Leaflet maps. Everything comes from the service's /maps routes.
//
// Query parameters: scene (id), layers (comma-separated names), opacity (0..1, the layers over
// the scene), api_key (sent on every request when the service needs one), compare (the base URL
// of another satpipe service; it must allow this page's origin by CORS, SATPIPE_CORS_ORIGINS).
// window.satpipeViewer exposes the maps and ready() (every shown layer has loaded its tiles).
(function () {
  "use strict";

  const MAX_ZOOM = 22;
  const params = new URLSearchParams(window.location.search);
  const key = params.get("api_key");
  const el = (id) => document.getElementById(id);
  const viewer = { panes: [], scene: null, ready: () => false };
  window.satpipeViewer = viewer;

  function withKey(url) {
    if (!key) return url;
    return url + (url.includes("?") ? "&" : "?") + "api_key=" + encodeURIComponent(key);
  }

  async function getJSON(base, path) {
    const response = await fetch(withKey(base + path));
    const body = await response.json();
    if (!response.ok) throw new Error(`${base}${path}: ${response.status} ${body.detail}`);
    return body;
  }

  function status(text) {
    el("status").textContent = text;
  }

  function node(tag, text, attrs) {
    const n = document.createElement(tag);
    if (text !== undefined) n.textContent = text;
    Object.entries(attrs || {}).forEach(([k, v]) => n.setAttribute(k, v));
    return n;
  }

  // One map and the service it shows: base is "" for this service, else "<URL>/".
  function makePane(base, mapId, captionId) {
    const map = L.map(mapId, { fadeAnimation: false, maxZoom: MAX_ZOOM, zoomSnap: 1 });
    map.attributionControl.setPrefix(false);
    return { base, map, caption: el(captionId), index: null, layers: {} };
  }

  function shownLayers() {
    return Array.from(document.querySelectorAll("#layers input:checked")).map((i) => i.value);
  }

  function opacity() {
    return parseFloat(el("opacity").value);
  }

  function bounds(b) {
    return L.latLngBounds([b[1], b[0]], [b[3], b[2]]);
  }

  async function addLayers(pane, sceneId) {
    Object.values(pane.layers).forEach((layer) => layer.remove());
    pane.layers = {};
    const scene = pane.index.scenes.find((s) => s.id === sceneId);
    if (!scene) {
      pane.caption.textContent += ` - no scene ${sceneId}`;
      return;
    }
    const docs = await Promise.all(
      scene.layers.map((l) => getJSON(pane.base, l.tilejson.replace(/^\//, "")))
    );
    scene.layers.forEach((l, i) => {
      const layer = L.tileLayer(docs[i].tiles[0], {
        tileSize: 256,
        maxZoom: MAX_ZOOM,
        bounds: bounds(docs[i].bounds),
        zIndex: i + 1,
        opacity: l.name === "scene" ? 1 : opacity(),
      });
      layer.loadedOnce = false;
      layer.on("load", () => { layer.loadedOnce = true; });
      pane.layers[l.name] = layer;
    });
  }

  function showLayers() {
    const shown = shownLayers();
    viewer.panes.forEach((pane) => {
      Object.entries(pane.layers).forEach(([name, layer]) => {
        if (shown.includes(name)) layer.addTo(pane.map);
        else layer.remove();
      });
    });
    renderLegend();
  }

  function layerToggles(scene, wanted) {
    const box = el("layers");
    box.querySelectorAll("label").forEach((n) => n.remove());
    scene.layers.forEach((l) => {
      const input = node("input", undefined, { type: "checkbox", value: l.name });
      input.checked = wanted.includes(l.name);
      input.addEventListener("change", () => { showLayers(); remember(); });
      const label = node("label");
      label.append(input, " " + l.name);
      box.append(label);
    });
  }

  let legends = null;

  function renderLegend() {
    const box = el("legend");
    box.replaceChildren();
    if (!legends) return;
    const shown = shownLayers();
    legends.layers.filter((l) => shown.includes(l.layer)).forEach((l) => {
      box.append(node("h2", l.layer));
      if (l.kind === "ramp") {
        const stops = l.entries.map((e) => `${e.colour} ${e.value * 100}%`).join(", ");
        box.append(node("div", undefined, { class: "ramp", style: `background: linear-gradient(to right, ${stops})` }));
        const labels = node("div", undefined, { class: "ramp-labels" });
        l.entries.forEach((e) => labels.append(node("span", e.name)));
        box.append(labels);
        return;
      }
      l.entries.forEach((e) => {
        const row = node("div");
        row.append(node("span", undefined, { class: "swatch", style: `background: ${e.colour}` }), e.name);
        box.append(row);
      });
    });
  }

  function pointTable(info) {
    const table = node("table", undefined, { class: "point-info" });
    const row = (name, value) => {
      const tr = node("tr");
      tr.append(node("td", name), node("td", value));
      table.append(tr);
    };
    if (!info.inside) row("outside", "the scene");
    else row("pixel", `row ${info.row}, column ${info.col}`);
    if (info.class_name !== null) row("class", `${info.class_name} (code ${info.class_code})`);
    if (info.probability !== null) row("probability", `${(info.probability * 100).toFixed(1)}%`);
    if (info.tile) {
      row("tile", info.tile.id);
      row("tile class", `${info.tile.prediction} (score ${info.tile.score.toFixed(3)})`);
      Object.entries(info.tile.features).forEach(([k, v]) => row(k, Number(v).toPrecision(5)));
    }
    row("model", info.model_version);
    return table;
  }

  function onClick(pane) {
    return async (event) => {
      const at = event.latlng.wrap();
      const path = `maps/${viewer.scene}/point?lon=${at.lng.toFixed(7)}&lat=${at.lat.toFixed(7)}`;
      try {
        const info = await getJSON(pane.base, path);
        L.popup().setLatLng(event.latlng).setContent(pointTable(info)).openOn(pane.map);
      } catch (err) {
        status(err.message);
      }
    };
  }

  function remember() {
    const url = new URL(window.location.href);
    url.searchParams.set("scene", viewer.scene);
    url.searchParams.set("layers", shownLayers().join(","));
    url.searchParams.set("opacity", el("opacity").value);
    window.history.replaceState(null, "", url);
  }

  async function showScene(sceneId, wanted) {
    viewer.scene = sceneId;
    const scene = viewer.panes[0].index.scenes.find((s) => s.id === sceneId);
    layerToggles(scene, wanted);
    legends = await getJSON("", `maps/${sceneId}/legend`);
    await Promise.all(viewer.panes.map((pane) => addLayers(pane, sceneId)));
    const view = ["lat", "lon", "zoom"].map((k) => params.get(k));
    if (view.every((v) => v !== null)) viewer.panes[0].map.setView([+view[0], +view[1]], +view[2]);
    else viewer.panes[0].map.fitBounds(bounds(scene.bounds));
    showLayers();
    remember();
  }

  // Keep the second map on the first one's view (and the other way round).
  function sync(a, b) {
    let busy = false;
    const follow = (from, to) => () => {
      if (busy) return;
      busy = true;
      to.setView(from.getCenter(), from.getZoom(), { animate: false });
      busy = false;
    };
    a.on("move", follow(a, b));
    b.on("move", follow(b, a));
  }

  async function start() {
    const compare = params.get("compare");
    viewer.panes.push(makePane("", "map", "caption-0"));
    if (compare) {
      el("pane-compare").hidden = false;
      viewer.panes.push(makePane(compare.replace(/\/?$/, "/"), "map-compare", "caption-1"));
      sync(viewer.panes[0].map, viewer.panes[1].map);
    }
    if (params.get("opacity") !== null) el("opacity").value = params.get("opacity");
    for (const pane of viewer.panes) {
      pane.index = await getJSON(pane.base, "maps");
      const where = pane.base || window.location.host;
      pane.caption.textContent = `${where}: model ${pane.index.model_version}`;
      pane.map.on("click", onClick(pane));
      pane.map.invalidateSize();
    }
    const index = viewer.panes[0].index;
    el("model").textContent = `Model ${index.model_version} (md5 ${index.model_md5.slice(0, 8)})`;
    index.notes.forEach((note) => status(note));
    const picker = el("scene");
    index.scenes.forEach((s) => picker.append(node("option", s.id, { value: s.id })));
    if (!index.scenes.length) {
      status("No scene has pinned outputs: run the pipeline (dvc repro).");
      return;
    }
    const first = index.scenes.find((s) => s.id === params.get("scene")) || index.scenes[0];
    picker.value = first.id;
    const names = first.layers.map((l) => l.name);
    const wanted = params.get("layers")
      ? params.get("layers").split(",")
      : ["scene", names.includes("classes") ? "classes" : "tiles"];
    picker.addEventListener("change", () => showScene(picker.value, shownLayers()));
    el("opacity").addEventListener("input", () => {
      viewer.panes.forEach((pane) => Object.entries(pane.layers).forEach(([name, layer]) => {
        if (name !== "scene") layer.setOpacity(opacity());
      }));
      remember();
    });
    await showScene(first.id, wanted);
    viewer.ready = () => viewer.panes.every((pane) => shownLayers().every((name) => {
      const layer = pane.layers[name];
      return !layer || (layer.loadedOnce && !layer.isLoading());
    }));
  }

  start().catch((err) => {
    status(err.message);
    console.error(err);
  });
})();
