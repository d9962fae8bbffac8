// The API client: one fetch wrapper, whether the API answers, and what this browser may do.
import { describe } from "./helpers.js";

/**
 * `onReachable(boolean)` hears whether the last call reached the API (a network failure, then
 * the next success). `call` answers `{ status, ok, data, error }`, `error` being the refusal as
 * text; it throws only when the API did not answer.
 */
export function createApi({ onReachable }) {
  let offline = false;
  let access = { admin: false, detail: "Checking access…" };

  const reachable = (state) => {
    offline = !state;
    onReachable(state);
  };

  async function call(method, path, body) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      reachable(false);
      throw error;
    }
    reachable(true);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
    return { status: response.status, ok: response.ok, data, error: response.ok ? null : describe(data && data.detail) };
  }

  /** Asks `/api/access` whether this browser holds the admin cookie: its answer, or null if none. */
  async function loadAccess() {
    let reply;
    try { reply = await call("GET", "/api/access"); } catch { return null; }
    if (!reply.ok) return null;
    access = reply.data;
    return access;
  }

  return { call, loadAccess, isAdmin: () => access.admin, isOffline: () => offline };
}
