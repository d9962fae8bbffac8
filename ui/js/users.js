// The users screen's list: search, sort, pages, CSV export, and each row's edit and delete.
import { $, emptyRow, setText, tableRow } from "./dom.js";
import { showMessage } from "./banners.js";
import { ariaSort, nextSort, pageInfoText, usersCsv } from "./helpers.js";
import { createUserForm } from "./user-form.js";
import { createBatchImport } from "./batch.js";

const PAGE_SIZE = 20;

export function createUsersScreen(api) {
  let offset = 0;
  let query = "";
  let sort = "id";
  let shown = [];

  async function refresh() {
    const parameters = new URLSearchParams({ limit: PAGE_SIZE, offset });
    if (query) parameters.set("q", query);
    if (sort !== "id") parameters.set("sort", sort);
    let reply;
    try { reply = await api.call("GET", `/users?${parameters}`); } catch { return; }
    if (!reply.ok) { showMessage(reply.error, "error"); return; }
    const page = reply.data;
    shown = page.items;
    $("user-rows").replaceChildren(...page.items.map(userRow));
    if (page.items.length === 0) $("user-rows").append(emptyUsersRow(query));
    $("export-csv").disabled = page.items.length === 0;
    for (const header of document.querySelectorAll("#users th")) {
      const button = header.querySelector("button.sort");
      if (!button) continue;
      const state = ariaSort(sort, button.dataset.sort);
      if (state) header.setAttribute("aria-sort", state);
      else header.removeAttribute("aria-sort");
    }
    setText("page-info", pageInfoText(page));
    $("previous-page").disabled = page.offset === 0;
    $("next-page").disabled = page.offset + page.items.length >= page.total;
  }

  /** The page shown, as CSV, downloaded as a file. */
  function exportCsv() {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([usersCsv(shown)], { type: "text/csv" }));
    link.download = `users-${offset + 1}-${offset + shown.length}.csv`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  }

  const form = createUserForm(api, { onChange: refresh });
  createBatchImport(api, { onImported: refresh });

  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    query = $("search").value.trim();
    offset = 0;
    refresh();
  });
  for (const button of document.querySelectorAll("button.sort")) {
    button.addEventListener("click", () => {
      sort = nextSort(sort, button.dataset.sort);
      offset = 0;
      refresh();
    });
  }
  $("previous-page").addEventListener("click", () => { offset = Math.max(0, offset - PAGE_SIZE); refresh(); });
  $("next-page").addEventListener("click", () => { offset += PAGE_SIZE; refresh(); });
  $("export-csv").addEventListener("click", exportCsv);
  $("user-rows").addEventListener("click", (event) => {
    const tr = event.target.closest("tr[data-id]");
    if (!tr) return;
    const action = event.target.closest("button[data-action]");
    if (action && action.dataset.action === "delete") {
      form.remove(shown.find((user) => String(user.id) === tr.dataset.id));
      return;
    }
    form.open(tr.dataset.id);
  });
  $("user-rows").addEventListener("keydown", (event) => {
    const tr = event.target.closest("tr[data-id]");
    if (event.key === "Enter" && tr && !event.target.closest("button")) form.open(tr.dataset.id);
  });
  return { refresh };
}

function userRow(user) {
  const tr = tableRow([[user.id], [user.username], [user.email], [new Date(user.created_at).toLocaleString()]], user.id);
  const actions = document.createElement("td");
  actions.className = "row-actions";
  actions.append(rowButton("Edit", "edit", user), rowButton("Delete", "delete", user));
  tr.append(actions);
  return tr;
}

function rowButton(label, action, user) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.dataset.action = action;
  button.className = action === "delete" ? "danger" : "";
  button.setAttribute("aria-label", `${label} user ${user.username}`);
  return button;
}

function emptyUsersRow(query) {
  return emptyRow(query ? `No user matches "${query}".`
    : "No users yet. Create one with the form, import a batch, or load a fixture on the Database screen.", 5);
}
