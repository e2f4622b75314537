// What every page of the console builds with: painting a view, the notice
// carried to the next page, the loading and failure states, and the
// definition controls and problem summary that the new-connector form and
// the connector page's editor share. app.js and connector.js both import
// from here, and neither imports the other's pages.

import { h, replace, uid } from './dom.js';
import { ApiError } from './api.js';

// On the first page of a visit the browser's own starting point (the top,
// with the skip link) is right; after that, each page change moves the
// focus to the new heading.
let firstPaint = true;

/** Puts a view's content in place and moves focus to its heading, so that
 * keyboard and screen-reader users start at the top of what changed. */
export function paint(view, ...children) {
  replace(view.main, ...children);
  const heading = view.main.querySelector('h1');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    if (!firstPaint) heading.focus({ preventScroll: false });
  }
  firstPaint = false;
}

// A message for the next page to show, such as "deleted" after a delete
// that navigates back to the list.
let pendingFlash = null;
export function flash(message) {
  pendingFlash = message;
}

export function takeFlash() {
  const message = pendingFlash;
  pendingFlash = null;
  return message ? h('p', { class: 'notice', role: 'status', 'data-testid': 'flash' }, message) : null;
}

export function loading(view, what) {
  replace(view.main, h('p', { class: 'muted', role: 'status' }, `Loading ${what}…`));
}

export function failure(view, error, what) {
  paint(view,
    h('h1', {}, `Could not load ${what}`),
    h('p', { class: 'error' }, error instanceof ApiError ? error.message : String(error)),
    h('p', {}, h('a', { href: '#/' }, 'Back to connectors')));
}

/** The name, description and extra-fields controls of the new-connector
 * form and of the connector page's editor. */
export function definitionControls({ name = '', description = '', extraFields = 'reject', retention = null } = {}) {
  const ids = { name: uid('connector-name'), description: uid('description'), retention: uid('retention') };
  const nameError = h('p', { class: 'error', id: `${ids.name}-error`, hidden: true });
  const nameInput = h('input', {
    id: ids.name, type: 'text', value: name, required: true, maxlength: '100', autocomplete: 'off',
    spellcheck: 'false', 'data-testid': 'connector-name', 'aria-describedby': `${ids.name}-error ${ids.name}-hint`,
  });
  const descriptionError = h('p', { class: 'error', id: `${ids.description}-error`, hidden: true });
  const descriptionInput = h('textarea', {
    id: ids.description, rows: '2', 'aria-describedby': `${ids.description}-error`,
  }, description || '');
  const extraError = h('p', { class: 'error', id: uid('extra-error'), hidden: true });
  const radioName = uid('extra');
  const radio = (value, label, hint) => {
    const id = uid('extra');
    return h('div', { class: 'radio' },
      h('input', { type: 'radio', id, name: radioName, value, checked: value === extraFields, 'aria-describedby': `${id}-hint` }),
      h('label', { for: id }, label),
      h('p', { class: 'hint', id: `${id}-hint` }, hint));
  };
  const extraSet = h('fieldset', { class: 'extra', 'aria-describedby': extraError.id },
    h('legend', {}, 'Fields the schema does not name'),
    radio('reject', 'Reject the record', 'A record with a field that is not in the schema is refused (the default).'),
    radio('ignore', 'Ignore those fields', 'Extra fields are dropped; the rest of the record is kept.'),
    extraError);
  const extraInput = extraSet.querySelector('input');
  const retentionError = h('p', { class: 'error', id: `${ids.retention}-error`, hidden: true });
  const retentionInput = h('input', {
    id: ids.retention, type: 'text', value: retention || '', autocomplete: 'off', spellcheck: 'false',
    placeholder: 'forever', 'data-testid': 'retention', 'aria-describedby': `${ids.retention}-error ${ids.retention}-hint`,
  });
  return {
    nameBlock: h('div', { class: 'control' },
      h('label', { for: ids.name }, 'Name'),
      h('p', { class: 'hint', id: `${ids.name}-hint` }, '1 to 100 characters, unique among connectors.'),
      nameInput, nameError),
    descriptionBlock: h('div', { class: 'control' },
      h('label', { for: ids.description }, 'Description (optional)'),
      descriptionInput, descriptionError),
    extraBlock: extraSet,
    retentionBlock: h('div', { class: 'control' },
      h('label', { for: ids.retention }, 'Keep records for (optional)'),
      h('p', { class: 'hint', id: `${ids.retention}-hint` },
        'A number and a unit, such as 90m, 12h or 30d; older records and rejected records are deleted. Empty keeps them forever.'),
      retentionInput, retentionError),
    controls: {
      name: { input: nameInput, error: nameError },
      description: { input: descriptionInput, error: descriptionError },
      extra_fields: { input: extraInput, error: extraError },
      retention: { input: retentionInput, error: retentionError },
    },
    name: () => nameInput.value.trim(),
    description: () => descriptionInput.value.trim(),
    extraFields: () => extraSet.querySelector('input:checked').value,
    retention: () => retentionInput.value.trim() || null,
  };
}

/** The box above a form that lists its refused fields (see showProblems). */
export function summaryBox() {
  return h('div', { class: 'summary error-box', role: 'alert', tabindex: '-1', hidden: true, 'data-testid': 'problems' });
}
