// Shows the startup steps the app reports until the UI takes over the window.
"use strict";
const invoke = window.__TAURI__.core.invoke;

async function poll() {
  const state = await invoke("startup_state");
  document.getElementById("step").textContent = state.step;
  const progress = document.getElementById("progress");
  progress.hidden = state.percent === null;
  if (state.percent !== null) progress.value = state.percent;
  document.getElementById("failure").hidden = state.failure === null;
  if (state.failure !== null) document.getElementById("reason").textContent = state.failure;
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("retry").addEventListener("click", () => invoke("retry"));
  poll();
  setInterval(poll, 150);
});
