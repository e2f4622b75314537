// The audit log: the global page (#/audit) and a connector's history on
// its page. Both page the API oldest first by cursor and show the newest
// first; "Show older" reads further back.

import { h, replace, when } from './dom.js';
import { audit } from './api.js';
import { paint, loading, failure } from './view.js';

const PAGE = 50;

/** The audit log of every connector, newest first. */
export async function auditPage(view) {
  view.setTitle('Audit log');
  loading(view, 'the audit log');
  const log = auditLog(null);
  try {
    await log.load();
  } catch (error) {
    if (view.isCurrent()) failure(view, error, 'the audit log');
    return;
  }
  if (!view.isCurrent()) return;
  paint(view,
    h('h1', {}, 'Audit log'),
    h('p', { class: 'lead' }, 'Every change made through the control plane: when, by which token, from which address, and what changed. Tokens and their hashes are never recorded.'),
    h('section', { class: 'card', 'aria-label': 'Changes' }, log.element));
}

/** A connector's history, for its page. */
export function historySection(c) {
  const log = auditLog(c.id);
  return {
    element: h('section', { class: 'card', 'aria-labelledby': 'history-h' },
      h('h2', { id: 'history-h' }, 'History'),
      h('p', { class: 'hint' }, 'Every change to this connector, newest first.'),
      log.element),
    load: () => log.load().catch((error) => log.fail(error)),
  };
}

// The entries of one connector (or all when `connector` is null). The API
// pages oldest first; the whole log up to now is read, then shown newest
// first, PAGE at a time.
function auditLog(connector) {
  const body = h('div', { 'data-testid': connector ? 'history' : 'audit-log' });
  let entries = [];
  let shown = 0;
  const more = h('button', { type: 'button', class: 'button secondary', 'data-testid': 'audit-more', hidden: true, onclick: () => show(shown + PAGE) }, 'Show older');

  function show(count) {
    shown = Math.min(count, entries.length);
    if (entries.length === 0) {
      replace(body, h('p', { class: 'muted' }, 'No changes recorded yet.'));
    } else {
      replace(body, entriesTable(entries.slice(0, shown), connector === null));
    }
    more.hidden = shown >= entries.length;
  }

  return {
    element: h('div', {}, body, h('div', { class: 'actions' }, more)),
    async load() {
      replace(body, h('p', { class: 'muted' }, 'Loading…'));
      entries = (await audit.all(connector)).reverse();
      show(PAGE);
    },
    fail(error) {
      replace(body, h('p', { class: 'error' }, error.message));
    },
  };
}

function entriesTable(entries, withConnector) {
  const head = ['When', 'Who', 'From', ...(withConnector ? ['Connector'] : []), 'Change', 'What changed'];
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Changes', tabindex: '0' },
    h('table', { class: 'data', 'data-testid': 'audit-table' },
      h('thead', {}, h('tr', {}, head.map((col) => h('th', { scope: 'col' }, col)))),
      h('tbody', {}, entries.map((e) => h('tr', { 'data-action': e.action },
        h('td', {}, when(e.at)),
        h('td', { 'data-testid': 'actor' }, e.actor),
        h('td', {}, e.client_address || h('span', { class: 'muted' }, 'unknown')),
        withConnector
          ? h('td', {}, e.action === 'connector.deleted'
            ? h('code', {}, e.connector_id)
            : h('a', { href: `#/connectors/${e.connector_id}` }, h('code', {}, e.connector_id)))
          : null,
        h('td', { 'data-testid': 'action' }, e.action),
        h('td', {}, changes(e)))))));
}

// An edit's members as "from → to"; a creation's or a copy's definition
// member by member; anything else as it is.
function changes(entry) {
  const items = Object.entries(entry.changes || {}).map(([key, value]) => {
    const isDiff = value && typeof value === 'object' && !Array.isArray(value)
      && Object.keys(value).length === 2 && 'from' in value && 'to' in value;
    return h('li', {},
      h('strong', {}, `${key}: `),
      isDiff
        ? [h('code', { class: 'json' }, compact(value.from)), ' → ', h('code', { class: 'json' }, compact(value.to))]
        : h('code', { class: 'json' }, compact(value)));
  });
  return h('ul', { class: 'plain' }, items);
}

function compact(value) {
  return value === undefined ? 'null' : JSON.stringify(value);
}
