// A connector's rate limits on its page: requests and records per second
// of each of its tokens; empty follows the deployment's default.

import { h, replace, uid, announce, whileBusy } from './dom.js';
import { connectors, ApiError } from './api.js';

const MAX = 1_000_000_000;

/** The card; `saved(updated)` re-renders the page with the new connector. */
export function limitsSection(c, saved) {
  const limits = c.limits || {};
  const output = h('div', { 'aria-live': 'polite' });
  const field = (key, label, hint) => {
    const id = uid(key);
    const error = h('p', { class: 'error', id: `${id}-error`, hidden: true });
    const input = h('input', {
      id, type: 'number', min: '1', max: String(MAX), step: '1', inputmode: 'numeric',
      value: limits[key] ?? '', placeholder: 'default', 'data-testid': `limit-${key}`,
      'aria-describedby': `${id}-error ${id}-hint`,
    });
    return {
      key, input, error,
      block: h('div', { class: 'control' },
        h('label', { for: id }, label),
        h('p', { class: 'hint', id: `${id}-hint` }, hint),
        input, error),
    };
  };
  const fields = [
    field('requests_per_second', 'Requests per second', 'POST and GET of records, per token. Empty: the deployment’s default (SLUICE_DEFAULT_REQUESTS_PER_SECOND, unlimited unless set).'),
    field('records_per_second', 'Records per second', 'Records sent, per token, counted before they are accepted. Empty: SLUICE_DEFAULT_RECORDS_PER_SECOND.'),
  ];
  const save = h('button', { type: 'submit', class: 'button', 'data-testid': 'save-limits' }, 'Save limits');
  const form = h('form', {
    novalidate: true,
    onsubmit: (event) => {
      event.preventDefault();
      return whileBusy(save, async () => {
        const body = {};
        for (const f of fields) {
          f.error.hidden = true;
          f.input.removeAttribute('aria-invalid');
          const text = f.input.value.trim();
          body[f.key] = text === '' ? null : Number(text);
        }
        try {
          const updated = await connectors.edit(c.id, { limits: body });
          announce('Rate limits saved');
          saved(updated);
        } catch (error) {
          if (!(error instanceof ApiError)) throw error;
          let placed = false;
          for (const problem of error.errors) {
            const f = fields.find((x) => problem.field === `limits.${x.key}`);
            if (!f) continue;
            replace(f.error, problem.message);
            f.error.hidden = false;
            f.input.setAttribute('aria-invalid', 'true');
            if (!placed) f.input.focus();
            placed = true;
          }
          if (!placed) replace(output, h('p', { class: 'error', role: 'alert' }, error.message));
        }
      });
    },
  },
  fields.map((f) => f.block),
  h('div', { class: 'actions' }, save));
  return h('section', { class: 'card', 'aria-labelledby': 'limits-h' },
    h('h2', { id: 'limits-h' }, 'Rate limits'),
    h('p', {}, 'Each token of this connector gets these rates; past them it is answered 429 with Retry-After. Sent across several gateways, each takes its share.'),
    form,
    output);
}
