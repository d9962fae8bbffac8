// Small DOM builders shared by the screens.

export const $ = (id) => document.getElementById(id);

/** Sets an element's text; nothing to show reads as "–". */
export function setText(id, value) {
  $(id).textContent = value === null || value === undefined || value === "" ? "–" : String(value);
}

export function listItem(content) {
  const element = document.createElement("li");
  element.textContent = content;
  return element;
}

export function paragraph(content, className) {
  const element = document.createElement("p");
  element.textContent = content;
  element.className = className;
  return element;
}

/** A table row of `[content, className?]` cells; with an id, a row that can be focused and opened. */
export function tableRow(cells, id) {
  const tr = document.createElement("tr");
  for (const [content, className] of cells) {
    const td = document.createElement("td");
    td.textContent = content;
    if (className) td.className = className;
    tr.append(td);
  }
  if (id !== undefined) {
    tr.dataset.id = id;
    tr.tabIndex = 0;
  }
  return tr;
}

/** A table's one row when it has nothing to list: `text` across its `columns`. */
export function emptyRow(text, columns) {
  const row = document.createElement("tr");
  const cell = document.createElement("td");
  cell.colSpan = columns;
  cell.className = "empty";
  cell.textContent = text;
  row.append(cell);
  return row;
}
