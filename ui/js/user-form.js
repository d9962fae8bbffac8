// The user form: create, edit and delete one user, with refusals shown next to their fields.
import { $ } from "./dom.js";
import { showMessage } from "./banners.js";
import { describe } from "./helpers.js";

const FIELDS = ["username", "email"];

/** `onChange()` runs after a user was created, saved or deleted. */
export function createUserForm(api, { onChange }) {
  function edit(user) {
    clearFieldErrors();
    $("user-id").value = user ? user.id : "";
    $("username").value = user ? user.username : "";
    $("email").value = user ? user.email : "";
    $("user-form-title").textContent = user ? `User ${user.id}` : "New user";
    $("save-user").textContent = user ? "Save" : "Create";
    $("cancel-edit").hidden = !user;
    $("delete-user").hidden = !user;
    $("username").focus();
  }

  /** Opens the user with this id in the form, as the API has it now. */
  async function open(id) {
    let reply;
    try { reply = await api.call("GET", `/users/${id}`); } catch { return; }
    if (reply.ok) edit(reply.data);
    else showMessage(reply.error, "error");
  }

  async function save(event) {
    event.preventDefault();
    clearFieldErrors();
    const id = $("user-id").value;
    const body = { username: $("username").value, email: $("email").value };
    let reply;
    try { reply = await api.call(id ? "PATCH" : "POST", id ? `/users/${id}` : "/users", body); } catch { return; }
    if (reply.ok) {
      showMessage(id ? `Saved user ${reply.data.username}.` : `Created user ${reply.data.username}.`);
      edit(null);
      onChange();
    } else {
      showFieldErrors(reply.data && reply.data.detail);
    }
  }

  /** Deletes `user` (a row's), or the one in the form when null, after confirmation. */
  async function remove(user) {
    const id = user ? user.id : $("user-id").value;
    const name = user ? user.username : $("username").value;
    if (!id || !window.confirm(`Delete user ${name}? This cannot be undone.`)) return;
    let reply;
    try { reply = await api.call("DELETE", `/users/${id}`); } catch { return; }
    if (reply.status === 204) {
      showMessage(`User ${name} deleted.`);
      if (String($("user-id").value) === String(id)) edit(null);
      onChange();
    } else {
      showMessage(reply.error, "error");
    }
  }

  $("user-form").addEventListener("submit", save);
  $("cancel-edit").addEventListener("click", () => edit(null));
  $("delete-user").addEventListener("click", () => remove(null));
  return { open, remove };
}

function clearFieldErrors() {
  for (const field of FIELDS) {
    $(`${field}-error`).textContent = "";
    $(field).removeAttribute("aria-invalid");
  }
}

/** Shows 409/422 items next to their fields; what cannot be placed goes to the message line. */
function showFieldErrors(detail) {
  const unplaced = [];
  for (const error of Array.isArray(detail) ? detail : []) {
    const field = error.loc[error.loc.length - 1];
    if (FIELDS.includes(field)) {
      $(`${field}-error`).textContent = error.msg;
      $(field).setAttribute("aria-invalid", "true");
    } else {
      unplaced.push(error);
    }
  }
  if (!Array.isArray(detail)) showMessage(describe(detail), "error");
  else if (unplaced.length) showMessage(describe(unplaced), "error");
}
