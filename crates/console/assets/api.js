// The console's only way to the API: same origin, the operator token from
// this tab's session storage (never localStorage, never a cookie), and
// problem+json errors turned into ApiError.

const TOKEN_KEY = 'sluice.operator_token';

export function operatorToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function rememberToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** A non-2xx answer; `problem` is the RFC 9457 body (or a stand-in). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.code = problem.code || null;
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
  }
}

/** Called when the API answers 401: the token is gone or wrong. */
let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

export async function api(method, path, body, { token = operatorToken() } = {}) {
  const headers = { Accept: 'application/json', Authorization: `Bearer ${token}` };
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, { title: 'Network error', detail: `Sluice could not be reached (${error.message}).` });
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const problem = data && typeof data === 'object' ? data : { title: response.statusText, detail: text };
    const error = new ApiError(response.status, problem);
    if (response.status === 401) onUnauthorized(error);
    throw error;
  }
  return data;
}

const enc = encodeURIComponent;

export const connectors = {
  /** Every connector, following next_cursor to the end. */
  async all() {
    const found = [];
    let cursor = null;
    do {
      const query = new URLSearchParams({ limit: '1000' });
      if (cursor) query.set('cursor', cursor);
      const page = await api('GET', `/v1/connectors?${query}`);
      found.push(...page.connectors);
      cursor = page.next_cursor;
    } while (cursor);
    return found;
  },
  get: (id) => api('GET', `/v1/connectors/${enc(id)}`),
  create: (definition) => api('POST', '/v1/connectors', definition),
  edit: (id, changes) => api('PATCH', `/v1/connectors/${enc(id)}`, changes),
  remove: (id) => api('DELETE', `/v1/connectors/${enc(id)}`),
  duplicate: (id, name) => api('POST', `/v1/connectors/${enc(id)}/duplicate`, { name }),
  /** Stores the rejected records that the current schema accepts: {replayed, still_rejected}. */
  replayRejected: (id) => api('POST', `/v1/connectors/${enc(id)}/rejected/replay`),
  /** Deletes every rejected record: {deleted}. */
  clearRejected: (id) => api('DELETE', `/v1/connectors/${enc(id)}/rejected`),
};

/** A connector's named tokens; secrets only in what create and rotate answer. */
export const tokens = {
  list: (id) => api('GET', `/v1/connectors/${enc(id)}/tokens`),
  create: (id, body) => api('POST', `/v1/connectors/${enc(id)}/tokens`, body),
  revoke: (id, tokenId) => api('DELETE', `/v1/connectors/${enc(id)}/tokens/${enc(tokenId)}`),
  /** Rotates the rotatable `kind` token; the old one works for `grace` (`10m`) or stops now. */
  rotate: (id, kind, grace) => api('POST', `/v1/connectors/${enc(id)}/tokens/${enc(kind)}${grace ? `?grace=${enc(grace)}` : ''}`),
};

export const audit = {
  /** Every entry of one connector (or of all, for null), oldest first,
   * following next_cursor until a page says no more follows. */
  async all(connector) {
    const found = [];
    let cursor = '';
    for (;;) {
      const query = new URLSearchParams({ limit: '1000', cursor });
      if (connector) query.set('connector_id', connector);
      const page = await api('GET', `/v1/audit?${query}`);
      found.push(...page.entries);
      cursor = page.next_cursor;
      if (!page.has_more) return found;
    }
  },
};

const PREVIEW_PAGE = 1000;
const PREVIEW_MAX_PAGES = 10;

/**
 * The newest `count` records (`source` "records") or rejected records
 * ("rejected"), newest first. The read API pages oldest first, so this
 * walks only a window of recent arrivals: `_received_at` from just before
 * the last arrival, widened until it holds `count` records. `partial` is
 * true when even the narrowest window held more than the walk reads, so the
 * rows shown may not be the very newest.
 */
export async function newest(id, source, lastReceivedAt, count = 20) {
  const windowsMs = lastReceivedAt ? [5_000, 300_000, 86_400_000, null] : [null];
  let result = { records: [], partial: false };
  for (const windowMs of windowsMs) {
    // Microseconds trimmed to milliseconds: not every Date.parse takes more.
    const last = Date.parse(String(lastReceivedAt).replace(/(\.\d{3})\d+/, '$1'));
    const since = windowMs === null || Number.isNaN(last) ? null : new Date(last - windowMs).toISOString();
    let tail = [];
    let cursor = null;
    let more = true;
    let pages = 0;
    while (more && pages < PREVIEW_MAX_PAGES) {
      const query = new URLSearchParams({ limit: String(PREVIEW_PAGE) });
      if (cursor) query.set('cursor', cursor);
      if (since) query.set('_received_at', `gte.${since}`);
      const page = await api('GET', `/v1/connectors/${enc(id)}/${source}?${query}`);
      tail = tail.concat(page.records).slice(-count);
      more = page.has_more;
      cursor = page.next_cursor;
      pages += 1;
    }
    result = { records: tail.reverse(), partial: more };
    if (more || tail.length >= count) break;
  }
  return result;
}
