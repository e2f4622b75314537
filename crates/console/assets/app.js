// The console's entry: sign-in, the routes (#/, #/new, #/connectors/{id},
// #/audit), the connector list and the new-connector form.

import { h, replace, announce, when, uid, whileBusy } from './dom.js';
import { api, connectors, operatorToken, rememberToken, forgetToken, whenUnauthorized, ApiError } from './api.js';
import { fieldTable, showProblems, clearProblems } from './fields.js';
import { paint, takeFlash, loading, failure, definitionControls, summaryBox } from './view.js';
import { connectorPage, createdPanel } from './connector.js';
import { auditPage } from './audit.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');

// Each render gets a ticket; an answer that arrives after the person moved
// on to another page must not paint over it.
let ticket = 0;

function route() {
  ticket += 1;
  const mine = ticket;
  const view = { main, isCurrent: () => mine === ticket, setTitle };
  if (!operatorToken()) {
    nav.hidden = true;
    signInView(view);
    return;
  }
  nav.hidden = false;
  const hash = location.hash || '#/';
  const connector = /^#\/connectors\/([0-9A-Za-z-]+)$/.exec(hash);
  for (const link of nav.querySelectorAll('a')) {
    if (link.getAttribute('href') === hash) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (hash === '#/new') newConnectorView(view);
  else if (hash === '#/audit') auditPage(view);
  else if (connector) connectorPage(view, connector[1]);
  else listView(view);
}

function setTitle(title) {
  document.title = `${title} · Sluice console`;
}

whenUnauthorized(() => {
  if (!operatorToken()) return;
  forgetToken();
  announce('Sluice no longer accepts the token: sign in again.');
  route();
});

document.getElementById('sign-out').addEventListener('click', () => {
  forgetToken();
  announce('Signed out');
  location.hash = '#/';
  route();
});

// The skip link must not change the hash: that is the console's route.
document.querySelector('.skip-link').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', route);
route();

// ---------------------------------------------------------------------------
// Sign-in

function signInView(view) {
  view.setTitle('Sign in');
  const inputId = uid('token');
  const errorId = uid('token-error');
  const input = h('input', {
    id: inputId, type: 'password', name: 'token', required: true, autocomplete: 'off',
    spellcheck: 'false', 'aria-describedby': `${errorId} ${inputId}-hint`,
  });
  const error = h('p', { id: errorId, class: 'error', hidden: true });
  const button = h('button', { type: 'submit', class: 'button' }, 'Sign in');
  const form = h('form', {
    class: 'card narrow',
    onsubmit: (event) => {
      event.preventDefault();
      return whileBusy(button, async () => {
        const token = input.value.trim();
        error.hidden = true;
        if (!token) {
          showError('Enter the operator token.');
          return;
        }
        try {
          // Any control-plane route tells whether this is the operator's token.
          await api('GET', '/v1/connectors?limit=1', undefined, { token });
          rememberToken(token);
          announce('Signed in');
          route();
        } catch (e) {
          if (e.status === 401) showError('Sluice does not know this token. Use the value of SLUICE_ADMIN_TOKEN.');
          else if (e.status === 403) showError('That is a connector token. The console needs the operator token (SLUICE_ADMIN_TOKEN).');
          else showError(e.message);
        }
      });
    },
  },
  h('label', { for: inputId }, 'Operator token'),
  h('p', { class: 'hint', id: `${inputId}-hint` }, 'The value of SLUICE_ADMIN_TOKEN. It stays in this browser tab only and is forgotten when the tab closes.'),
  input,
  error,
  h('div', { class: 'actions' }, button));

  function showError(message) {
    replace(error, message);
    error.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  }

  paint(view, h('h1', {}, 'Sign in to Sluice'), form);
  input.focus();
}

// ---------------------------------------------------------------------------
// Connector list

async function listView(view) {
  view.setTitle('Connectors');
  const flashed = takeFlash();
  loading(view, 'connectors');
  let all;
  try {
    all = await connectors.all();
  } catch (error) {
    if (view.isCurrent()) failure(view, error, 'the connectors');
    return;
  }
  if (!view.isCurrent()) return;

  const header = h('div', { class: 'page-head' },
    h('h1', {}, 'Connectors'),
    h('a', { class: 'button', href: '#/new', 'data-testid': 'new-connector' }, 'New connector'));

  if (all.length === 0) {
    paint(view, header, flashed,
      h('div', { class: 'card empty' },
        h('p', {}, 'No connectors yet. A connector turns a typed schema into one URL that producers POST records to and consumers read them back from.'),
        h('p', {}, h('a', { href: '#/new' }, 'Create the first connector'))));
    return;
  }

  const searchId = uid('search');
  const count = h('p', { class: 'muted', role: 'status', 'aria-live': 'polite' });
  const rows = all.map((c) => ({
    name: c.name.toLowerCase(),
    row: h('tr', { 'data-connector-id': c.id },
      h('th', { scope: 'row', 'data-label': 'Name' }, h('a', { href: `#/connectors/${c.id}` }, c.name)),
      h('td', { 'data-label': 'Fields', class: 'num' }, String(c.fields.length)),
      h('td', { 'data-label': 'Schema version', class: 'num' }, String(c.schema_version)),
      h('td', { 'data-label': 'Records', class: 'num', 'data-testid': 'records' }, c.stats.records.toLocaleString()),
      h('td', { 'data-label': 'Rejected', class: 'num' }, c.stats.rejected.toLocaleString()),
      h('td', { 'data-label': 'Last received' }, when(c.stats.last_received_at))),
  }));
  const body = h('tbody', {}, rows.map((r) => r.row));
  const noMatch = h('p', { class: 'muted', hidden: true }, 'No connector name contains that text.');
  const search = h('input', {
    id: searchId, type: 'search', autocomplete: 'off', spellcheck: 'false',
    oninput: () => filter(search.value),
  });

  function filter(text) {
    const needle = text.trim().toLowerCase();
    let shown = 0;
    for (const { name, row } of rows) {
      const match = !needle || name.includes(needle);
      row.hidden = !match;
      if (match) shown += 1;
    }
    noMatch.hidden = shown !== 0;
    count.textContent = needle
      ? `${shown} of ${rows.length} connectors match`
      : `${rows.length} connector${rows.length === 1 ? '' : 's'}`;
  }

  paint(view, header, flashed,
    h('div', { class: 'search' }, h('label', { for: searchId }, 'Search by name'), search),
    count,
    h('div', { class: 'table-wrap' },
      h('table', { class: 'list responsive' },
        h('caption', { class: 'visually-hidden' }, 'Connectors, oldest first'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, 'Name'),
          h('th', { scope: 'col', class: 'num' }, 'Fields'),
          h('th', { scope: 'col', class: 'num' }, 'Schema version'),
          h('th', { scope: 'col', class: 'num' }, 'Records'),
          h('th', { scope: 'col', class: 'num' }, 'Rejected'),
          h('th', { scope: 'col' }, 'Last received'))),
        body)),
    noMatch);
  filter('');
}

// ---------------------------------------------------------------------------
// New connector

function newConnectorView(view) {
  view.setTitle('New connector');
  const definition = definitionControls();
  const table = fieldTable({ fields: [{ name: '', type: 'string', nullable: false }], legend: 'Fields' });
  const summary = summaryBox();
  const create = h('button', { type: 'submit', class: 'button', 'data-testid': 'create' }, 'Create connector');
  const form = h('form', {
    class: 'card',
    novalidate: true,
    onsubmit: (event) => {
      event.preventDefault();
      return whileBusy(create, async () => {
        clearProblems(definition.controls, summary);
        table.clearErrors();
        const body = {
          name: definition.name(), fields: table.value(), extra_fields: definition.extraFields(),
          retention: definition.retention(),
        };
        if (definition.description()) body.description = definition.description();
        try {
          const created = await connectors.create(body);
          announce(`Connector ${created.name} created`);
          paint(view, ...createdPanel(created, { heading: `Connector “${created.name}” created` }));
        } catch (error) {
          if (!(error instanceof ApiError)) throw error;
          showProblems(error, { controls: definition.controls, table, summary });
        }
      });
    },
  },
  summary,
  definition.nameBlock,
  definition.descriptionBlock,
  table.element,
  definition.extraBlock,
  definition.retentionBlock,
  h('div', { class: 'actions' }, create, h('a', { href: '#/', class: 'button secondary' }, 'Cancel')));

  paint(view, h('h1', {}, 'New connector'),
    h('p', { class: 'lead' }, 'Name the connector and list its fields. Sluice answers with one URL: producers POST records to it, consumers GET them back.'),
    form);
}
