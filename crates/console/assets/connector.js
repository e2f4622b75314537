// The connector page (schema editor, records preview, rejected records,
// stats, rate limits, tokens, history, duplicate, delete) and the panel that shows a new
// connector's endpoint and tokens the one time they exist.

import { h, replace, announce, when, uid, confirmDialog, copyField, whileBusy } from './dom.js';
import { connectors, newest, ApiError } from './api.js';
import { fieldTable, showProblems, clearProblems, exampleValue } from './fields.js';
import { paint, loading, failure, definitionControls, summaryBox, flash } from './view.js';
import { tokensSection } from './tokens.js';
import { limitsSection } from './limits.js';
import { historySection } from './audit.js';

const PREVIEW_ROWS = 20;

export async function connectorPage(view, id, notice = null) {
  loading(view, 'the connector');
  let connector;
  try {
    connector = await connectors.get(id);
  } catch (error) {
    if (view.isCurrent()) failure(view, error, 'this connector');
    return;
  }
  if (view.isCurrent()) render(view, connector, notice);
}

function render(view, c, notice) {
  view.setTitle(c.name);
  const schema = schemaSection(view, c);
  const records = previewSection(c, 'records');
  const rejected = previewSection(c, 'rejected');
  const tokenPanel = tokensSection(c);
  const history = historySection(c);
  const limits = limitsSection(c, (updated) => {
    if (view.isCurrent()) render(view, updated, 'Rate limits saved.');
  });
  paint(view,
    h('p', { class: 'breadcrumb' }, h('a', { href: '#/' }, 'Connectors'), ' / '),
    h('h1', { 'data-testid': 'connector-title' }, c.name),
    c.description ? h('p', { class: 'lead' }, c.description) : null,
    copyField('Endpoint', c.endpoint, { testId: 'endpoint' }),
    h('section', { class: 'card', 'aria-labelledby': 'stats-h' },
      h('h2', { id: 'stats-h' }, 'Stats'),
      h('dl', { class: 'stats' },
        stat('Records', c.stats.records.toLocaleString(), 'stat-records'),
        stat('Rejected', c.stats.rejected.toLocaleString(), 'stat-rejected'),
        stat('Last received', when(c.stats.last_received_at)),
        stat('Oldest record', when(c.stats.oldest_received_at), 'stat-oldest'),
        stat('On disk', bytes(c.stats.bytes), 'stat-bytes'),
        stat('Kept for', c.retention || 'forever', 'stat-retention'),
        stat('Waiting to be stored', backlog(c.stats.backlog), 'stat-backlog'),
        stat('Schema version', String(c.schema_version), 'stat-version'),
        stat('Fields', String(c.fields.length)),
        stat('Extra fields', c.extra_fields === 'ignore' ? 'ignored' : 'rejected'),
        stat('Created', when(c.created_at)),
        stat('Updated', when(c.updated_at)),
        stat('Id', h('code', {}, c.id)))),
    schema.element,
    records.element,
    rejected.element,
    limits,
    tokenPanel.element,
    history.element,
    duplicateSection(view, c),
    deleteSection(c));
  records.load();
  rejected.load();
  tokenPanel.load();
  history.load();
  if (notice) schema.notify(notice);
}

function stat(label, value, testId) {
  return h('div', {}, h('dt', {}, label), h('dd', { 'data-testid': testId }, value));
}

// Accepted records the read API has not stored yet. The API counts the
// waiting messages exactly and estimates the records in them from the
// oldest and newest one, exact for up to two messages.
function backlog(b) {
  if (!b) return h('span', { class: 'muted' }, 'unknown: NATS did not answer');
  if (b.messages === 0) return 'none';
  const count = b.records_estimate.toLocaleString();
  const records = `${b.messages > 2 ? 'about ' : ''}${count} record${b.records_estimate === 1 ? '' : 's'}`;
  return `${records}, the oldest waiting for ${duration(b.seconds_behind)}`;
}

// The records table's size on disk, in binary units.
function bytes(n) {
  if (n === null || n === undefined) return h('span', { class: 'muted' }, 'unknown');
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let size = n;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n.toLocaleString()} bytes` : `${size.toFixed(1)} ${units[unit]}`;
}

function duration(seconds) {
  if (seconds < 60) return `${Math.floor(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

// ---------------------------------------------------------------------------
// Schema editor

function schemaSection(view, c) {
  const definition = definitionControls({
    name: c.name, description: c.description, extraFields: c.extra_fields, retention: c.retention,
  });
  const table = fieldTable({ fields: c.fields, editing: true, legend: 'Fields' });
  const summary = summaryBox();
  const notice = h('p', { class: 'notice', role: 'status', tabindex: '-1', hidden: true, 'data-testid': 'saved' });
  const save = h('button', { type: 'submit', class: 'button', 'data-testid': 'save' }, 'Save changes');
  const form = h('form', {
    novalidate: true,
    onsubmit: (event) => {
      event.preventDefault();
      return whileBusy(save, async () => {
        clearProblems(definition.controls, summary);
        table.clearErrors();
        notice.hidden = true;
        try {
          const updated = await connectors.edit(c.id, {
            name: definition.name(),
            description: definition.description() || null,
            fields: table.value(),
            extra_fields: definition.extraFields(),
            retention: definition.retention(),
          });
          announce(`Saved; schema version ${updated.schema_version}`);
          if (view.isCurrent()) render(view, updated, `Saved. Schema version ${updated.schema_version}.`);
        } catch (error) {
          if (!(error instanceof ApiError)) throw error;
          showProblems(error, { controls: definition.controls, table, summary });
        }
      });
    },
  },
  h('p', { class: 'hint' }, 'Rename a field by changing its name here: its stored values are kept. A type change is accepted only where every stored value converts without loss; removing a field deletes its stored values.'),
  summary,
  definition.nameBlock,
  definition.descriptionBlock,
  table.element,
  definition.extraBlock,
  definition.retentionBlock,
  h('div', { class: 'actions' },
    save,
    h('button', {
      type: 'button',
      class: 'button secondary',
      onclick: () => { if (view.isCurrent()) render(view, c, 'Changes discarded.'); },
    }, 'Discard changes')));
  return {
    element: h('section', { class: 'card', 'aria-labelledby': 'schema-h' },
      h('h2', { id: 'schema-h' }, 'Schema and settings'), notice, form),
    notify(message) {
      replace(notice, message);
      notice.hidden = false;
      notice.focus();
    },
  };
}

// ---------------------------------------------------------------------------
// Records and rejected records

function previewSection(c, source) {
  const isRecords = source === 'records';
  const headingId = uid(`${source}-h`);
  const body = h('div', { 'data-testid': `${source}-preview` });
  const refresh = h('button', { type: 'button', class: 'button secondary', 'data-testid': `refresh-${source}`, onclick: () => load() },
    isRecords ? 'Refresh records' : 'Refresh rejected records');
  const lifecycle = isRecords ? null : rejectedActions(c, () => load());

  const load = () => whileBusy(refresh, async () => {
    replace(body, h('p', { class: 'muted' }, 'Loading…'));
    try {
      const { records, partial } = await newest(c.id, source, c.stats.last_received_at, PREVIEW_ROWS);
      if (records.length === 0) {
        replace(body, h('p', { class: 'muted' }, isRecords
          ? 'No records yet. POST some to the endpoint.'
          : 'No rejected records. Records refused in mode=partial are kept here with their errors.'));
      } else {
        replace(body,
          partial ? h('p', { class: 'hint' }, 'Records arrive faster than this preview reads: these are recent, but maybe not the very newest.') : null,
          isRecords ? recordsTable(c, records) : rejectedTable(records));
      }
    } catch (error) {
      replace(body, h('p', { class: 'error' }, error.message));
    }
  });

  return {
    element: h('section', { class: 'card', 'aria-labelledby': headingId },
      h('div', { class: 'section-head' },
        h('h2', { id: headingId }, isRecords ? 'Newest records' : 'Rejected records'),
        refresh),
      h('p', { class: 'hint' }, isRecords
        ? `The ${PREVIEW_ROWS} most recent records, newest first.`
        : `The ${PREVIEW_ROWS} most recent rejected records, newest first, with why they were refused.`),
      lifecycle,
      body),
    load,
  };
}

// Replaying validates the rejected records against the schema of now and
// stores those that pass; clearing deletes them all. Both update the stats
// shown above and reload the preview.
function rejectedActions(c, reload) {
  // Announced by `announce`; shown here too, next to the buttons.
  const output = h('p', { class: 'notice', hidden: true, 'data-testid': 'rejected-result' });
  const show = (text, isError = false) => {
    output.className = isError ? 'error' : 'notice';
    replace(output, text);
    output.hidden = false;
  };
  const afterwards = async (text) => {
    show(text);
    announce(text);
    try {
      const fresh = await connectors.get(c.id);
      c.stats = fresh.stats;
      for (const [testId, value] of [['stat-records', fresh.stats.records], ['stat-rejected', fresh.stats.rejected]]) {
        const shown = document.querySelector(`[data-testid=${testId}]`);
        if (shown) replace(shown, value.toLocaleString());
      }
    } catch {
      // The numbers stay as they were; the result above is what counts.
    }
    reload();
  };
  const plural = (n, one, many) => `${n.toLocaleString()} ${n === 1 ? one : many}`;
  const replay = h('button', {
    type: 'button',
    class: 'button secondary',
    'data-testid': 'replay-rejected',
    onclick: () => whileBusy(replay, async () => {
      try {
        const { replayed, still_rejected: still } = await connectors.replayRejected(c.id);
        await afterwards(`${plural(replayed, 'record', 'records')} replayed and stored; ${plural(still, 'stays', 'stay')} rejected.`);
      } catch (error) {
        show(error.message, true);
      }
    }),
  }, 'Replay rejected');
  const clear = h('button', {
    type: 'button',
    class: 'button danger',
    'data-testid': 'clear-rejected',
    onclick: async () => {
      const ok = await confirmDialog({
        title: `Clear the rejected records of “${c.name}”?`,
        body: ['Every rejected record and its errors are deleted. They cannot be recovered or replayed afterwards. Stored records are not touched.'],
        confirmLabel: 'Clear rejected records',
        danger: true,
      });
      if (!ok) return;
      await whileBusy(clear, async () => {
        try {
          const { deleted } = await connectors.clearRejected(c.id);
          await afterwards(`${plural(deleted, 'rejected record', 'rejected records')} deleted.`);
        } catch (error) {
          show(error.message, true);
        }
      });
    },
  }, 'Clear rejected…');
  return h('div', {},
    h('p', { class: 'hint' }, 'After fixing the schema, replay the rejected records: those that pass now are stored as new records (keeping when they were received), the others stay here with their new errors.'),
    h('div', { class: 'actions' }, replay, clear),
    output);
}

function recordsTable(c, records) {
  const columns = ['_id', '_received_at', ...c.fields.map((f) => f.name)];
  for (const record of records) {
    for (const key of Object.keys(record)) if (!columns.includes(key)) columns.push(key);
  }
  return scrollTable('Newest records', 'records-table',
    columns.map((col) => h('th', { scope: 'col' }, col)),
    records.map((record) => h('tr', {}, columns.map((col) => h('td', {}, cell(record[col]))))));
}

function rejectedTable(records) {
  return scrollTable('Rejected records', 'rejected-table',
    ['_id', '_received_at', 'Record as sent', 'Errors'].map((col) => h('th', { scope: 'col' }, col)),
    records.map((r) => h('tr', {},
      h('td', {}, r._id),
      h('td', {}, cell(r._received_at)),
      h('td', {}, h('code', { class: 'json' }, JSON.stringify(r.record))),
      h('td', {}, h('ul', { class: 'plain' }, (r.errors || []).map((e) => h('li', {},
        e.field ? h('strong', {}, `${e.field}: `) : null,
        e.message || e.code || JSON.stringify(e),
        e.code ? h('span', { class: 'muted' }, ` (${e.code})`) : null)))))));
}

/** A table that scrolls sideways inside its own keyboard-focusable region,
 * so that a wide schema never makes the page scroll at 360 px. */
function scrollTable(label, testId, headCells, rows) {
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': label, tabindex: '0' },
    h('table', { class: 'data', 'data-testid': testId },
      h('thead', {}, h('tr', {}, headCells)),
      h('tbody', {}, rows)));
}

function cell(value) {
  if (value === null || value === undefined) return h('span', { class: 'muted' }, 'null');
  if (typeof value === 'object') return h('code', { class: 'json' }, JSON.stringify(value));
  return String(value);
}

// ---------------------------------------------------------------------------
// Tokens, duplicate, delete

function duplicateSection(view, c) {
  const inputId = uid('copy-name');
  const error = h('p', { class: 'error', id: `${inputId}-error`, hidden: true });
  const input = h('input', {
    id: inputId, type: 'text', maxlength: '100', autocomplete: 'off', spellcheck: 'false', required: true,
    value: `${c.name}-copy`.slice(0, 100), 'data-testid': 'duplicate-name', 'aria-describedby': error.id,
  });
  const button = h('button', { type: 'submit', class: 'button secondary', 'data-testid': 'duplicate' }, 'Duplicate');
  const form = h('form', {
    novalidate: true,
    onsubmit: (event) => {
      event.preventDefault();
      return whileBusy(button, async () => {
        error.hidden = true;
        input.removeAttribute('aria-invalid');
        try {
          const created = await connectors.duplicate(c.id, input.value.trim());
          announce(`Copy ${created.name} created`);
          if (view.isCurrent()) paint(view, ...createdPanel(created, { heading: `Copy “${created.name}” created` }));
        } catch (e) {
          if (!(e instanceof ApiError)) throw e;
          replace(error, (e.errors[0] && e.errors[0].message) || e.message);
          error.hidden = false;
          input.setAttribute('aria-invalid', 'true');
          input.focus();
        }
      });
    },
  },
  h('label', { for: inputId }, 'Name of the copy'),
  h('div', { class: 'copy-row' }, input, button),
  error);
  return h('section', { class: 'card', 'aria-labelledby': 'duplicate-h' },
    h('h2', { id: 'duplicate-h' }, 'Duplicate'),
    h('p', {}, 'A new connector with the same schema and settings, its own endpoint and tokens, and no records.'),
    form);
}

function deleteSection(c) {
  const records = c.stats.records;
  const rejected = c.stats.rejected;
  const what = `its ${records.toLocaleString()} stored record${records === 1 ? '' : 's'} and ${rejected.toLocaleString()} rejected record${rejected === 1 ? '' : 's'}`;
  const output = h('div', { role: 'alert' });
  const button = h('button', {
    type: 'button',
    class: 'button danger',
    'data-testid': 'delete',
    onclick: async () => {
      const ok = await confirmDialog({
        title: `Delete “${c.name}”?`,
        body: [
          `This deletes the connector and ${what}. They cannot be recovered.`,
          'Its endpoint answers 404 from then on, and its tokens stop working.',
        ],
        confirmLabel: 'Delete connector and records',
        danger: true,
      });
      if (!ok) return;
      try {
        await connectors.remove(c.id);
        flash(`Connector “${c.name}” and its records were deleted.`);
        location.hash = '#/';
      } catch (error) {
        replace(output, h('p', { class: 'error' }, error.message));
      }
    },
  }, 'Delete connector…');
  return h('section', { class: 'card danger-zone', 'aria-labelledby': 'delete-h' },
    h('h2', { id: 'delete-h' }, 'Delete'),
    h('p', {}, `Deleting “${c.name}” also deletes ${what}.`),
    h('div', { class: 'actions' }, button),
    output);
}

// ---------------------------------------------------------------------------
// A new connector's endpoint and tokens

const shellQuote = (text) => `'${text.replaceAll("'", "'\\''")}'`;

/** The nodes of the one view that ever shows a connector's tokens together. */
export function createdPanel(created, { heading }) {
  const example = Object.fromEntries(created.fields.map((f) => [f.name, exampleValue(f.type)]));
  const send = [
    `curl -X POST ${shellQuote(created.endpoint)} \\`,
    `  -H ${shellQuote(`Authorization: Bearer ${created.write_token}`)} \\`,
    "  -H 'Content-Type: application/json' \\",
    `  -d ${shellQuote(JSON.stringify([example]))}`,
  ].join('\n');
  const retrieve = [
    `curl ${shellQuote(`${created.endpoint}?limit=100`)} \\`,
    `  -H ${shellQuote(`Authorization: Bearer ${created.read_token}`)}`,
  ].join('\n');
  return [
    h('h1', { 'data-testid': 'created-title' }, heading),
    h('p', { class: 'warning', role: 'note' }, h('strong', {}, 'Copy the tokens now. '),
      'Sluice stores only their hashes and will not show them again; you can rotate them on the connector page.'),
    h('section', { class: 'card', 'aria-labelledby': 'created-endpoint-h' },
      h('h2', { id: 'created-endpoint-h' }, 'Endpoint and tokens'),
      copyField('Endpoint', created.endpoint, { testId: 'endpoint' }),
      copyField('Write token (POST records)', created.write_token, { testId: 'write-token', secret: true }),
      copyField('Read token (GET records)', created.read_token, { testId: 'read-token', secret: true })),
    h('section', { class: 'card', 'aria-labelledby': 'created-curl-h' },
      h('h2', { id: 'created-curl-h' }, 'Try it'),
      copyField('Send a record', send, { testId: 'curl-send', multiline: true }),
      copyField('Retrieve records', retrieve, { testId: 'curl-retrieve', multiline: true })),
    h('p', { class: 'actions' },
      h('a', { class: 'button', href: `#/connectors/${created.id}`, 'data-testid': 'open-connector' }, 'Open the connector page'),
      h('a', { class: 'button secondary', href: '#/' }, 'All connectors')),
  ];
}
