// Small DOM helpers. Every piece of text goes in as a text node, never as
// HTML, so names and values that come from the API cannot inject markup.

/**
 * h('button', {type: 'button', onclick: fn, class: 'x'}, 'Save')
 * Attributes: `class`, `for`, `data-*`, `aria-*` and other attributes are set
 * as attributes; `on<event>` adds a listener; booleans add or omit the
 * attribute; null and undefined are skipped. Children: nodes, strings,
 * numbers, arrays of those, null/false (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'value') {
      el.value = value;
    } else if (key === 'checked') {
      el.checked = Boolean(value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces everything inside `el` with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let nextId = 0;
/** A document-unique id, for label/aria wiring. */
export function uid(prefix) {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/**
 * Runs `work` with `button` marked busy, and refuses to run it again until
 * it is done. `aria-disabled` rather than `disabled`: a disabled button
 * drops the keyboard focus, and a keyboard user pressing it would land back
 * at the top of the page. So every handler of such a button goes through
 * here, which refuses while the button is busy.
 */
export async function whileBusy(button, work) {
  if (button.getAttribute('aria-disabled') === 'true') return;
  button.setAttribute('aria-disabled', 'true');
  try {
    await work();
  } finally {
    button.removeAttribute('aria-disabled');
  }
}

/** Tells screen readers (and the tests) what just happened. */
export function announce(message) {
  const status = document.getElementById('status');
  status.textContent = '';
  // A fresh text node after a tick makes repeated messages heard again.
  setTimeout(() => { status.textContent = message; }, 30);
}

/** A date for people, with the exact value on hover. */
export function when(iso) {
  if (!iso) return h('span', { class: 'muted' }, 'never');
  const date = new Date(iso);
  return h('time', { datetime: iso, title: iso }, date.toLocaleString());
}

/**
 * A modal confirmation with the native <dialog>: focus is trapped, Escape
 * cancels. Resolves to true when `confirmLabel` is chosen.
 */
export function confirmDialog({ title, body, confirmLabel, danger = false }) {
  return new Promise((resolve) => {
    const titleId = uid('dialog-title');
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId });
    const cancel = h('button', { type: 'button', class: 'button secondary', onclick: () => dialog.close('cancel') }, 'Cancel');
    const confirm = h('button', {
      type: 'button',
      class: danger ? 'button danger' : 'button',
      'data-confirm': true,
      onclick: () => dialog.close('confirm'),
    }, confirmLabel);
    replace(dialog,
      h('h2', { id: titleId }, title),
      ...[].concat(body).map((p) => (p instanceof Node ? p : h('p', {}, p))),
      h('div', { class: 'actions' }, cancel, confirm));
    const opener = document.activeElement;
    dialog.addEventListener('close', () => {
      dialog.remove();
      if (opener && opener.isConnected) opener.focus();
      resolve(dialog.returnValue === 'confirm');
    });
    document.body.appendChild(dialog);
    dialog.showModal();
    // The safe choice has focus first.
    cancel.focus();
  });
}

/** Copies text, falling back to a hidden textarea where the async
 * clipboard is unavailable (plain http on a non-local host). */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h('textarea', { class: 'visually-hidden', readonly: true }, text);
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch { ok = false; }
    area.remove();
    return ok;
  }
}

/**
 * A labelled, read-only value with a copy button: used for the endpoint and
 * the tokens. `testId` names it for the browser tests.
 */
export function copyField(label, value, { testId, secret = false, multiline = false } = {}) {
  const id = uid('copy');
  // A read-only textarea rather than an input, so that a long token or URL
  // wraps on a narrow screen instead of hiding its end.
  const control = h('textarea', {
    id,
    readonly: true,
    rows: multiline ? String(Math.min(8, value.split('\n').length + 1)) : '1',
    spellcheck: 'false',
    autocomplete: 'off',
    class: multiline ? 'mono copy-value multi' : 'mono copy-value single',
    'data-testid': testId,
  }, value);
  const button = h('button', {
    type: 'button',
    class: 'button secondary copy',
    'aria-describedby': id,
    onclick: async () => {
      const ok = await copyText(value);
      button.textContent = ok ? 'Copied' : 'Select and copy';
      if (!ok) control.select();
      announce(ok ? `${label} copied` : `Could not copy ${label}; it is selected, press Ctrl+C`);
      setTimeout(() => { button.textContent = 'Copy'; }, 2000);
    },
  }, 'Copy');
  return h('div', { class: secret ? 'copy-field secret' : 'copy-field' },
    h('label', { for: id }, label),
    h('div', { class: 'copy-row' }, control, button));
}
