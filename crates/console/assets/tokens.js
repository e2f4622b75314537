// A connector's tokens on its page: the list (name, scope, expiry, last
// use; never a secret), a form that creates a named token and shows its
// secret once, revocation, and rotation of the rotatable write and read
// tokens with an optional grace period for the old one.

import { h, replace, announce, when, uid, confirmDialog, copyField, whileBusy } from './dom.js';
import { tokens, ApiError } from './api.js';

const GRACES = [
  ['', 'at once'],
  ['10m', 'after 10 minutes'],
  ['1h', 'after 1 hour'],
  ['1d', 'after 1 day'],
];

/** The section, and `load`, which fills its list (call it once painted). */
export function tokensSection(c) {
  const list = h('div', { 'data-testid': 'tokens-list' }, h('p', { class: 'muted' }, 'Loading…'));
  // Where a secret is shown, the one time it exists.
  const output = h('div', { 'aria-live': 'polite', 'data-testid': 'token-output' });
  const showSecret = (label, secret, testId) => {
    replace(output,
      h('p', { class: 'warning' }, `The ${label} is shown only now. Copy it before you leave this page.`),
      copyField(label[0].toUpperCase() + label.slice(1), secret, { testId, secret: true }));
    output.querySelector('textarea').focus();
  };
  const showError = (error) => replace(output, h('p', { class: 'error', role: 'alert' }, error.message));

  const load = async () => {
    try {
      const { tokens: found } = await tokens.list(c.id);
      replace(list, tokenTable(c, found, { reload: load, showError }));
    } catch (error) {
      replace(list, h('p', { class: 'error' }, error.message));
    }
  };

  const graceId = uid('grace');
  const grace = h('select', { id: graceId, 'data-testid': 'rotate-grace' },
    GRACES.map(([value, label]) => h('option', { value }, label)));
  const rotate = (kind) => h('button', {
    type: 'button',
    class: 'button secondary',
    'data-testid': `rotate-${kind}`,
    onclick: async () => {
      const after = grace.value;
      const who = kind === 'write' ? 'producers' : 'consumers';
      const ok = await confirmDialog({
        title: `Rotate the ${kind} token?`,
        body: [after
          ? `The current ${kind} token of “${c.name}” keeps working for ${GRACES.find(([v]) => v === after)[1].replace('after ', '')}, then stops: ${who} must switch to the new one before.`
          : `The current ${kind} token of “${c.name}” stops working at once: ${who} still using it get 401 until they switch to the new one.`],
        confirmLabel: `Rotate ${kind} token`,
      });
      if (!ok) return;
      try {
        const { token } = await tokens.rotate(c.id, kind, after || null);
        showSecret(`new ${kind} token`, token, `new-${kind}-token`);
        announce(`${kind} token rotated`);
        load();
      } catch (error) {
        showError(error);
      }
    },
  }, `Rotate ${kind} token`);

  const element = h('section', { class: 'card', 'aria-labelledby': 'tokens-h' },
    h('h2', { id: 'tokens-h' }, 'Tokens'),
    h('p', {}, 'Sluice keeps only a hash of each token, so it cannot show them again. Give each producer or consumer a token of its own, so that one can be revoked without the others.'),
    list,
    createForm(c, { onCreated: (created) => { showSecret(`token “${created.name}”`, created.token, 'new-token'); announce(`Token ${created.name} created`); load(); } }),
    h('h3', {}, 'Rotate'),
    h('p', { class: 'hint' }, 'Rotating replaces the token made with the connector (or by the last rotation), marked “rotated” below; other tokens are not touched.'),
    h('div', { class: 'control' }, h('label', { for: graceId }, 'The old token stops'), grace),
    h('div', { class: 'actions' }, rotate('write'), rotate('read')),
    output);
  return { element, load };
}

function tokenTable(c, found, { reload, showError }) {
  if (found.length === 0) return h('p', { class: 'muted' }, 'No tokens: create one below.');
  const rows = found.map((t) => {
    const revoke = h('button', {
      type: 'button',
      class: 'button danger small',
      'data-testid': 'revoke-token',
      'aria-label': `Revoke ${t.name} (${t.scope})`,
      onclick: async () => {
        const ok = await confirmDialog({
          title: `Revoke the token “${t.name}”?`,
          body: [`This ${t.scope} token of “${c.name}” stops working at once, on every gateway; whoever uses it gets 401.`],
          confirmLabel: 'Revoke token',
          danger: true,
        });
        if (!ok) return;
        await whileBusy(revoke, async () => {
          try {
            await tokens.revoke(c.id, t.id);
            announce(`Token ${t.name} revoked`);
            reload();
          } catch (error) {
            showError(error);
          }
        });
      },
    }, 'Revoke');
    const status = t.expired ? 'expired' : t.rotatable ? 'rotated' : 'active';
    return h('tr', { 'data-testid': 'token-row', 'data-token-id': t.id },
      h('td', {}, t.name),
      h('td', {}, t.scope),
      h('td', { 'data-testid': 'token-status' }, status),
      h('td', {}, when(t.created_at)),
      h('td', {}, t.expires_at ? when(t.expires_at) : h('span', { class: 'muted' }, 'never')),
      h('td', { 'data-testid': 'token-last-used' }, when(t.last_used_at)),
      h('td', {}, revoke));
  });
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': 'Tokens', tabindex: '0' },
    h('table', { class: 'data', 'data-testid': 'tokens-table' },
      h('thead', {}, h('tr', {}, ['Name', 'Scope', 'Status', 'Created', 'Expires', 'Last used', ''].map((col) => h('th', { scope: 'col' }, col)))),
      h('tbody', {}, rows)));
}

function createForm(c, { onCreated }) {
  const nameId = uid('token-name');
  const scopeId = uid('token-scope');
  const expiresId = uid('token-expires');
  const error = h('p', { class: 'error', hidden: true, 'data-testid': 'token-error' });
  const name = h('input', { id: nameId, type: 'text', maxlength: '100', autocomplete: 'off', 'data-testid': 'token-name' });
  const scope = h('select', { id: scopeId, 'data-testid': 'token-scope' },
    h('option', { value: 'write' }, 'write: POST records'),
    h('option', { value: 'read' }, 'read: GET records and rejected records'));
  const expires = h('input', { id: expiresId, type: 'datetime-local', 'data-testid': 'token-expires' });
  const button = h('button', { type: 'submit', class: 'button secondary', 'data-testid': 'create-token' }, 'Create token');
  return h('form', {
    novalidate: true,
    onsubmit: (event) => {
      event.preventDefault();
      return whileBusy(button, async () => {
        error.hidden = true;
        // datetime-local is the browser's local time; the API takes UTC.
        const expiresAt = expires.value ? new Date(expires.value).toISOString() : null;
        try {
          const created = await tokens.create(c.id, { name: name.value.trim(), scope: scope.value, expires_at: expiresAt });
          name.value = '';
          expires.value = '';
          onCreated(created);
        } catch (e) {
          if (!(e instanceof ApiError)) throw e;
          replace(error, e.errors.map((p) => p.message).join(' ') || e.message);
          error.hidden = false;
          name.focus();
        }
      });
    },
  },
  h('h3', {}, 'New token'),
  error,
  h('div', { class: 'control' }, h('label', { for: nameId }, 'Name'), name),
  h('div', { class: 'control' }, h('label', { for: scopeId }, 'Scope'), scope),
  h('div', { class: 'control' }, h('label', { for: expiresId }, 'Expires (optional, your local time)'), expires),
  h('div', { class: 'actions' }, button));
}
