// The health screen's charts of the last 15 minutes, drawn from `/api/health/history`.
import { $ } from "./dom.js";

const HISTORY_MS = 15 * 60 * 1000;
const SVG = "http://www.w3.org/2000/svg";

export async function refreshCharts(api) {
  let reply;
  try { reply = await api.call("GET", "/api/health/history"); } catch { return; }
  if (!reply.ok) return;
  const samples = reply.data.samples;
  const last = samples[samples.length - 1];
  const at = samples.map((sample) => Date.parse(sample.at));
  drawChart("chart-latency", at, [samples.map((sample) => sample.latency_ms)],
    last && last.latency_ms !== null ? `${last.latency_ms.toFixed(2)} ms` : "down");
  drawChart("chart-pool", at, [samples.map((sample) => sample.in_use), samples.map((sample) => sample.idle)],
    last ? `${last.in_use} / ${last.idle}` : "");
  drawChart("chart-requests", at, [samples.map((sample) => sample.requests_per_second)],
    last ? last.requests_per_second.toFixed(1) : "");
  drawChart("chart-errors", at, [samples.map((sample) => 100 * sample.error_rate)],
    last ? `${(100 * last.error_rate).toFixed(1)} %` : "");
}

/** Lines over the last 15 minutes; a null value (no answer) breaks its line. */
function drawChart(id, times, series, now) {
  const figure = $(id);
  figure.querySelector(".now").textContent = now ? `· now ${now}` : "";
  const svg = figure.querySelector("svg");
  const end = times.length ? times[times.length - 1] : Date.now();
  const values = series.flat().filter((value) => value !== null);
  const top = Math.max(1, ...values) * 1.1;
  const x = (time) => (300 * (time - (end - HISTORY_MS))) / HISTORY_MS;
  const y = (value) => 78 - (76 * value) / top;
  svg.replaceChildren();
  series.forEach((points, index) => {
    let segment = [];
    const flush = () => {
      if (segment.length) {
        const line = document.createElementNS(SVG, "polyline");
        line.setAttribute("points", segment.join(" "));
        line.setAttribute("class", `series-${index}`);
        svg.append(line);
      }
      segment = [];
    };
    points.forEach((value, at) => {
      if (value === null) flush();
      else segment.push(`${x(times[at]).toFixed(1)},${y(value).toFixed(1)}`);
    });
    flush();
  });
  svg.dataset.points = String(values.length);
  svg.setAttribute("aria-label", `${figure.querySelector("figcaption").firstChild.textContent.trim()}: ${values.length} samples, now ${now || "none"}`);
}
