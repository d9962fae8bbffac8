// The batch import form: a pasted CSV or JSON array, imported all or nothing.
import { $, listItem, paragraph } from "./dom.js";
import { batchErrorText, parseBatch } from "./helpers.js";

/** `onImported()` runs after a batch was imported. */
export function createBatchImport(api, { onImported }) {
  async function importBatch(event) {
    event.preventDefault();
    const result = $("batch-result");
    result.replaceChildren();
    const { users, lines, problems } = parseBatch($("batch").value);
    if (problems.length) {
      showRefusal(result, problems);
      return;
    }
    let reply;
    try { reply = await api.call("POST", "/users/batch", users); } catch { return; }
    if (reply.ok) {
      result.append(paragraph(`Imported ${reply.data.created} users.`, "ok"));
      $("batch").value = "";
      onImported();
      return;
    }
    const detail = reply.data && reply.data.detail;
    showRefusal(result, Array.isArray(detail) ? detail.map((error) => batchErrorText(error, lines)) : [reply.error]);
  }

  $("batch-form").addEventListener("submit", importBatch);
}

function showRefusal(result, reasons) {
  const list = document.createElement("ul");
  list.append(...reasons.map(listItem));
  result.append(paragraph("Nothing was imported:", "failed"), list);
}
