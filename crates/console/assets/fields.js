// The field table of the new-connector form and of the schema editor, and
// the placing of the API's problems beside the control they concern.

import { h, replace, uid } from './dom.js';

/** The eight types of SPEC section 5, in the order people reach for them. */
export const FIELD_TYPES = ['string', 'integer', 'number', 'decimal', 'boolean', 'date', 'timestamp', 'json'];

/**
 * A field table. `fields` are the API's field objects; in the schema editor
 * (`editing`), each row remembers the name the field has on the server, so a
 * changed name is sent as a rename (`previous_name`) and keeps its values.
 */
export function fieldTable({ fields = [], editing = false, legend = 'Fields' }) {
  const list = h('ol', { class: 'field-list' });
  const tableError = h('p', { class: 'error', id: uid('fields-error'), hidden: true });
  const addButton = h('button', {
    type: 'button',
    class: 'button secondary',
    'data-testid': 'add-field',
    onclick: () => {
      const row = addRow({ name: '', type: 'string', nullable: false });
      row.querySelector('.field-name').focus();
    },
  }, 'Add field');

  function relabel() {
    [...list.children].forEach((row, i) => {
      const n = i + 1;
      row.querySelector('.label-name').textContent = `Field ${n} name`;
      row.querySelector('.label-type').textContent = `Field ${n} type`;
      row.querySelector('.label-nullable').textContent = `Field ${n} nullable`;
      row.querySelector('.field-delete').textContent = 'Delete';
      row.querySelector('.field-delete').setAttribute('aria-label', `Delete field ${n}${nameOf(row) ? ` (${nameOf(row)})` : ''}`);
    });
  }

  function nameOf(row) {
    return row.querySelector('.field-name').value.trim();
  }

  function addRow(field) {
    const ids = { name: uid('field-name'), type: uid('field-type'), nullable: uid('field-nullable'), error: uid('field-error') };
    const nameInput = h('input', {
      id: ids.name, class: 'field-name', type: 'text', value: field.name, required: true,
      autocomplete: 'off', spellcheck: 'false', maxlength: '63', 'aria-describedby': ids.error,
      pattern: '[A-Za-z][A-Za-z0-9_]{0,62}',
    });
    const typeSelect = h('select', { id: ids.type, class: 'field-type', 'aria-describedby': ids.error },
      FIELD_TYPES.map((t) => h('option', { value: t, selected: t === field.type }, t)));
    const nullable = h('input', { id: ids.nullable, class: 'field-nullable', type: 'checkbox', checked: field.nullable });
    const renamed = h('p', { class: 'hint renamed', hidden: true });
    const error = h('p', { class: 'error field-error', id: ids.error, hidden: true });
    const deleteButton = h('button', {
      type: 'button',
      class: 'button secondary field-delete',
      onclick: () => {
        const next = row.nextElementSibling || row.previousElementSibling;
        row.remove();
        relabel();
        (next ? next.querySelector('.field-name') : addButton).focus();
      },
    }, 'Delete');
    const row = h('li', { class: 'field-row' },
      h('div', { class: 'cell cell-name' },
        h('label', { for: ids.name, class: 'label-name cell-label' }), nameInput, renamed),
      h('div', { class: 'cell cell-type' },
        h('label', { for: ids.type, class: 'label-type cell-label' }), typeSelect),
      h('div', { class: 'cell cell-nullable' },
        nullable, h('label', { for: ids.nullable, class: 'label-nullable cell-label' })),
      h('div', { class: 'cell cell-delete' }, deleteButton),
      error);
    if (editing && field.name) {
      row.dataset.originalName = field.name;
      if (field.description) row.dataset.description = field.description;
      nameInput.addEventListener('input', () => {
        const now = nameInput.value.trim();
        renamed.hidden = !now || now === field.name;
        renamed.textContent = `Renamed from ${field.name}; its values are kept.`;
        relabel();
      });
    } else {
      nameInput.addEventListener('input', relabel);
    }
    list.appendChild(row);
    relabel();
    return row;
  }

  fields.forEach(addRow);

  const legendId = uid('fields-legend');
  const element = h('fieldset', { class: 'fields', 'aria-describedby': tableError.id },
    h('legend', { id: legendId }, legend),
    h('div', { class: 'field-head', 'aria-hidden': 'true' },
      h('span', {}, 'Name'), h('span', {}, 'Type'), h('span', {}, 'Nullable'), h('span', {})),
    list,
    tableError,
    h('div', { class: 'actions' }, addButton));

  return {
    element,
    rows: () => [...list.children],
    /** The `fields` array for the API, in row order. */
    value() {
      return [...list.children].map((row) => {
        const field = {
          name: row.querySelector('.field-name').value.trim(),
          type: row.querySelector('.field-type').value,
          nullable: row.querySelector('.field-nullable').checked,
        };
        if (row.dataset.description) field.description = row.dataset.description;
        const original = row.dataset.originalName;
        if (editing && original && original !== field.name) field.previous_name = original;
        return field;
      });
    },
    /** Places one problem; false when it concerns no row of this table. */
    place(problem) {
      const path = /^fields\[(\d+)\](?:\.([a-z_]+))?$/.exec(problem.field || '');
      let row = null;
      let control = null;
      if (path) {
        row = list.children[Number(path[1])] || null;
        if (row) {
          control = path[2] === 'type' ? row.querySelector('.field-type') : row.querySelector('.field-name');
        }
      } else if (problem.field === 'fields') {
        show(tableError, problem.message);
        return addButton;
      } else if (problem.field) {
        // An incompatible type change names the field itself.
        row = [...list.children].find((r) => nameOf(r) === problem.field || r.dataset.originalName === problem.field) || null;
        control = row ? row.querySelector('.field-type') : null;
      }
      if (!row) return null;
      show(row.querySelector('.field-error'), problem.message);
      control.setAttribute('aria-invalid', 'true');
      return control;
    },
    clearErrors() {
      tableError.hidden = true;
      for (const row of list.children) {
        row.querySelector('.field-error').hidden = true;
        row.querySelectorAll('[aria-invalid]').forEach((c) => c.removeAttribute('aria-invalid'));
      }
    },
  };
}

function show(el, message) {
  // Several problems can concern one row (an invalid name and a bad type).
  if (!el.hidden && el.textContent) {
    el.appendChild(h('br'));
    el.appendChild(document.createTextNode(message));
  } else {
    replace(el, message);
  }
  el.hidden = false;
}

/**
 * Shows an ApiError's problems next to their controls. `controls` maps a
 * problem's top-level `field` ("name", "description", "extra_fields") to
 * `{input, error}`; `table` places `fields[...]` problems. Whatever finds no
 * place goes to `summary`. Focus moves to the first control concerned, so
 * keyboard users land on what to fix.
 */
export function showProblems(error, { controls = {}, table = null, summary }) {
  const unplaced = [];
  let first = null;
  const problems = error.errors.length ? error.errors : [];
  for (const problem of problems) {
    let control = null;
    // An incompatible change names a field of the schema, which may well
    // be called "name": it belongs to the table, never to the form's controls.
    const target = error.code === 'incompatible_schema_change' ? null : controls[problem.field];
    if (target) {
      show(target.error, problem.message);
      target.input.setAttribute('aria-invalid', 'true');
      control = target.input;
    } else if (table) {
      control = table.place(problem);
    }
    if (control) first = first || control;
    else unplaced.push(problem.message);
  }
  const lines = [];
  if (!problems.length || unplaced.length || error.code === 'incompatible_schema_change') {
    lines.push(error.message);
  }
  lines.push(...unplaced.filter((m) => m !== error.message));
  if (lines.length) {
    replace(summary, h('strong', {}, problemTitle(error)), ...lines.map((l) => h('span', { class: 'block' }, l)));
    summary.hidden = false;
  }
  (first || summary).focus();
}

function problemTitle(error) {
  switch (error.code) {
    case 'incompatible_schema_change': return 'This schema change is refused: stored values would not survive it.';
    case 'name_taken': return 'That name is taken.';
    case 'invalid_schema': return 'The definition has problems.';
    default: return error.status ? `The server answered ${error.status}.` : 'Sluice could not be reached.';
  }
}

/** Clears what showProblems placed on plain controls. */
export function clearProblems(controls, summary) {
  for (const { input, error } of Object.values(controls)) {
    input.removeAttribute('aria-invalid');
    error.hidden = true;
    error.textContent = '';
  }
  summary.hidden = true;
  summary.textContent = '';
}

/** An example value of each type, for the curl command people paste. */
export function exampleValue(type) {
  switch (type) {
    case 'string': return 'example';
    case 'integer': return 42;
    case 'number': return 3.14;
    case 'decimal': return '19.99';
    case 'boolean': return true;
    case 'date': return '2026-11-29';
    case 'timestamp': return '2026-11-29T13:00:00Z';
    default: return { any: 'json' };
  }
}
