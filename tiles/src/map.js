// The web map: hexroad's own vector tiles drawn with MapLibre GL JS. Served
// as a file, not inline, so the page's Content-Security-Policy can forbid
// inline script.
import * as maplibregl from "/map/maplibre-gl.mjs";

// The map draws hexroad's own tiles only: no basemap, nothing from elsewhere.
const freshness = ["interpolate", ["linear"], ["get", "freshness_days"],
  0, "#1a9850", 7, "#fee08b", 30, "#d73027", 90, "#7f7f7f"];

async function start() {
  const tilejson = await (await fetch("/tiles.json")).json();
  const b = tilejson.data_bounds;
  const map = new maplibregl.Map({
    container: "map",
    style: {
      version: 8,
      sources: { hexroad: { type: "vector", tiles: tilejson.tiles,
                            minzoom: tilejson.minzoom, maxzoom: tilejson.maxzoom } },
      layers: [
        { id: "background", type: "background", paint: { "background-color": "#f4f2ee" } },
        { id: "coverage", type: "fill", source: "hexroad", "source-layer": "coverage",
          paint: { "fill-color": freshness, "fill-opacity": 0.75,
                   "fill-outline-color": "#0003" } },
        { id: "tracks", type: "line", source: "hexroad", "source-layer": "tracks",
          paint: { "line-color": "#3060c0", "line-width": 1.5, "line-opacity": 0.6 } },
        { id: "frames", type: "circle", source: "hexroad", "source-layer": "frames",
          paint: { "circle-radius": 4, "circle-color": "#222",
                   "circle-stroke-color": "#fff", "circle-stroke-width": 1 } },
      ],
    },
    bounds: b ? [[b[0], b[1]], [b[2], b[3]]] : undefined,
    fitBoundsOptions: { padding: 40 },
    center: b ? undefined : [0, 20],
    zoom: b ? undefined : 1,
    preserveDrawingBuffer: true,
  });
  map.addControl(new maplibregl.NavigationControl());
  map.on("click", "frames", (e) => {
    const f = e.features[0].properties;
    const box = document.createElement("div");
    box.className = "frame-popup";
    const img = document.createElement("img");
    img.src = f.image_url;
    img.alt = "frame " + f.frame_id;
    const caption = document.createElement("div");
    caption.textContent = new Date(f.ts).toLocaleString();
    box.append(img, caption);
    new maplibregl.Popup({ maxWidth: "340px" }).setLngLat(e.lngLat).setDOMContent(box).addTo(map);
  });
  map.on("click", "coverage", (e) => {
    if (map.queryRenderedFeatures(e.point, { layers: ["frames"] }).length) return;
    const f = e.features[0].properties;
    new maplibregl.Popup().setLngLat(e.lngLat).setText(
      `${f.frames} frames from ${f.contributors} contributor(s); latest ${new Date(f.last_seen).toLocaleString()}`
    ).addTo(map);
  });
  for (const layer of ["frames", "coverage"]) {
    map.on("mouseenter", layer, () => (map.getCanvas().style.cursor = "pointer"));
    map.on("mouseleave", layer, () => (map.getCanvas().style.cursor = ""));
  }
  // New frames: the server's tile version moves; fetch the tiles again.
  let version = tilejson.version;
  setInterval(async () => {
    try {
      const now = await (await fetch("/tiles.json")).json();
      if (now.version !== version) {
        version = now.version;
        map.getSource("hexroad").setTiles(now.tiles.map((t) => `${t}?v=${version}`));
      }
      document.getElementById("status").textContent = "";
    } catch (err) {
      document.getElementById("status").textContent = "server unreachable";
    }
  }, 5000);
  map.on("idle", () => document.body.setAttribute("data-idle", "1"));
}
start();
