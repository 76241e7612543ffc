// The freshness console: polls /ui/data every few seconds and redraws the panels in place;
// a run's audit comes from /ui/audit/{run_id}. Text only ever goes in through textContent.
'use strict';

const REFRESH_MS = 5000;
/** Data older than this many refresh periods is flagged as stale on the page itself. */
const LATE_AFTER = 3;

const state = { openRun: null, lastOk: 0, timer: null, signedOut: false };

const byId = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === 'string' || typeof c === 'number' ? String(c) : c);
  }
  return e;
}

/** A word on a coloured ground: the word carries the meaning, the colour repeats it. */
const badge = (word, kind) => el('span', { class: `badge ${kind}` }, word);

function age(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, seconds);
  const one = (v, unit) => `${v.toFixed(1).replace(/\.0$/, '')} ${unit}`;
  if (s < 10) return one(s, 's');
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 90 * 60) return one(s / 60, 'min');
  if (s < 48 * 3600) return one(s / 3600, 'h');
  return one(s / 86400, 'd');
}

const ratio = (r) => (r === null || r === undefined ? '—' : `${(r * 100).toFixed(1)} %`);

function size(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

/**
 * A bar of the range `lo`..`hi` against `limit` (a TTL, a byte budget). The scale runs to the
 * limit, or to `hi` when that is past it; then a tick marks the limit and the fill turns red.
 */
function rangeBar(lo, hi, limit, label) {
  const scale = Math.max(limit, hi) || 1;
  const kind = hi > limit ? 'over' : hi > 0.8 * limit ? 'near' : '';
  const b = el('span', { class: `bar ${kind}`, role: 'img', 'aria-label': label });
  const fill = el('span', { class: 'fill' });
  const left = Math.min(Math.max(lo / scale, 0), 0.97);
  fill.style.left = `${left * 100}%`;
  fill.style.width = `${Math.max(Math.min(hi / scale, 1) - left, 0.03) * 100}%`;
  b.append(fill);
  if (hi > limit) {
    const tick = el('span', { class: 'tick' });
    tick.style.left = `${(limit / scale) * 100}%`;
    b.append(tick);
  }
  return b;
}

/** A row whose cells are labelled with their column's heading (for the narrow layout). */
function row(table, cells, cls) {
  const heads = [...byId(table).querySelectorAll('thead th')].map((th) => th.textContent);
  const tr = el('tr', { class: cls });
  cells.forEach((c, i) => {
    // One wrapper per cell, so that the narrow layout sees a label and one value.
    const value = el('span', { class: 'value' });
    value.append(...(Array.isArray(c) ? c : [c]).map((x) => (x instanceof Node ? x : String(x))));
    tr.append(el('td', { 'data-label': heads[i] || '' }, value));
  });
  return tr;
}

function fill(table, rows, empty) {
  const body = byId(table).querySelector('tbody');
  const cols = byId(table).querySelectorAll('thead th').length;
  if (rows.length === 0) {
    rows = [el('tr', {}, el('td', { colspan: cols, class: 'muted' }, empty))];
  }
  body.replaceChildren(...rows);
}

function typeState(t) {
  const over = t.oldest_entry_age_seconds !== null && t.oldest_entry_age_seconds > t.ttl_seconds;
  if (t.expired_on_disk > 0 || over) {
    return [badge('stale', 'bad'), ` ${t.expired_on_disk} past TTL`];
  }
  if (t.entries === 0 && t.memory_entries === 0) return [badge('missing', 'warn'), ' no entries'];
  return [badge('fresh', 'ok')];
}

function typeRows(types) {
  return types.map((t) => {
    const newest = t.newest_entry_age_seconds;
    const oldest = t.oldest_entry_age_seconds;
    const ttl = t.ttl_seconds;
    const ages = oldest === null
      ? [el('span', { class: 'muted' }, `no entries on disk · TTL ${age(ttl)}`)]
      : [
          rangeBar(newest, oldest, ttl,
            `freshest ${age(newest)}, oldest ${age(oldest)}, against a TTL of ${age(ttl)}`),
          `${age(newest)} – ${age(oldest)} / ${age(ttl)}`,
        ];
    const st = typeState(t);
    const stale = st[0].textContent === 'stale';
    return row('types', [
      el('strong', {}, t.data_type), st, t.entries, ages, ratio(t.hit_ratio), t.expirations,
    ], stale ? 'bad-row' : undefined);
  });
}

function tierRows(tiers) {
  const words = { up: ['up', 'ok'], disabled: ['off', 'muted-badge'], degraded: ['degraded', 'bad'] };
  return tiers.map((t) => {
    const [word, kind] = words[t.state] || [t.state, 'warn'];
    const used = t.state === 'disabled' ? '—' : t.max_bytes
      ? [rangeBar(0, t.bytes, t.max_bytes, `${size(t.bytes)} of ${size(t.max_bytes)}`),
          `${size(t.bytes)} / ${size(t.max_bytes)}`]
      : [`${size(t.bytes)} / no limit`];
    return row('tiers', [t.tier, badge(word, kind), t.entries, used, ratio(t.hit_ratio), t.evictions],
      t.state === 'degraded' ? 'bad-row' : undefined);
  });
}

function since(ms, now) {
  if (ms === null || ms === undefined) return '—';
  const d = (now - ms) / 1000;
  return d >= 0 ? `${age(d)} ago` : `in ${age(-d)}`;
}

function feedRows(feeds, now) {
  const words = {
    fetched: ['fetched', 'ok'], revalidated: ['not modified', 'ok'], not_stored: ['not stored', 'warn'],
    error: ['error', 'bad'], pending: ['pending', 'warn'],
  };
  return feeds.map((f) => {
    const [word, kind] = words[f.outcome] || [f.outcome, 'warn'];
    const outcome = [f.status ? `${f.status} ` : '', badge(word, kind)];
    if (f.error) outcome.push(el('div', { class: 'detail' }, f.error));
    const late = f.next_refresh_ms !== null && now - f.next_refresh_ms > f.refresh_seconds * 1000;
    const next = late ? [badge('overdue', 'bad'), ` ${since(f.next_refresh_ms, now)}`]
      : since(f.next_refresh_ms, now);
    return row('feeds', [[f.key, el('div', { class: 'url' }, f.url)], since(f.last_fetch_ms, now),
      outcome, next], f.outcome === 'error' || late ? 'bad-row' : undefined);
  });
}

function count(n, word) {
  return n > 0 ? [badge(`${n} ${word}`, 'bad')] : [String(n)];
}

function runRows(runs, now) {
  return runs.map((r) => {
    const open = state.openRun === r.run_id;
    const button = el('button', {
      type: 'button', class: 'link', 'data-run': r.run_id, 'aria-controls': 'audit',
      'aria-expanded': open ? 'true' : 'false',
    }, r.run_id);
    button.addEventListener('click', () => openAudit(r.run_id));
    const passed = r.stale === 0 && r.missing === 0;
    const verdict = passed ? badge('passed', 'ok') : badge('refused', 'bad');
    const checked = Date.parse(r.checked_at);
    return row('runs', [button, Number.isNaN(checked) ? r.checked_at : since(checked, now), verdict,
      r.signals, r.fresh, count(r.stale, 'stale'), count(r.missing, 'missing')],
    passed ? undefined : 'bad-row');
  });
}

function auditRows(signals) {
  const kinds = { fresh: 'ok', stale: 'bad', missing: 'bad' };
  return signals.map((s) => {
    const ttl = s.ttl_ms / 1000;
    const ages = s.age_ms === null ? `— / ${age(ttl)}`
      : [rangeBar(0, s.age_ms / 1000, ttl, `age ${age(s.age_ms / 1000)} against a TTL of ${age(ttl)}`),
          `${age(s.age_ms / 1000)} / ${age(ttl)}`];
    return row('audit-table', [s.key, s.data_type, badge(s.verdict, kinds[s.verdict] || 'warn'), ages,
      el('code', {}, s.checksum || '—'), el('code', {}, s.etag || '—')],
    s.verdict === 'fresh' ? undefined : 'bad-row');
  });
}

async function getJson(path) {
  const resp = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
  if (resp.status === 401) {
    state.signedOut = true;
    throw new Error('signed out: reload the page to sign in again');
  }
  if (!resp.ok) {
    let message = `HTTP ${resp.status}`;
    try { message = (await resp.json()).message || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return resp.json();
}

async function openAudit(runId, keepFocus) {
  state.openRun = runId;
  const section = byId('audit');
  section.hidden = false;
  byId('audit-run').textContent = runId;
  for (const b of document.querySelectorAll('button[data-run]')) {
    b.setAttribute('aria-expanded', b.dataset.run === runId ? 'true' : 'false');
  }
  try {
    const data = await getJson(`/ui/audit/${encodeURIComponent(runId)}`);
    if (state.openRun !== runId) return;
    fill('audit-table', auditRows(data.signals), 'no audit rows for this run');
    const bad = data.signals.filter((s) => s.verdict !== 'fresh').length;
    byId('audit-note').textContent = `${data.signals.length} signals checked, ${bad} refused. `
      + 'Lineage (the inputs behind each value) is not recorded yet.';
  } catch (e) {
    byId('audit-note').textContent = `could not load the audit: ${e.message}`;
  }
  if (!keepFocus) byId('h-audit').focus();
}

function setStatus(text, bad) {
  const s = byId('status');
  s.replaceChildren(...(bad ? [badge(bad, 'bad'), ` ${text}`] : [text]));
  s.classList.toggle('error', Boolean(bad));
}

async function refresh() {
  clearTimeout(state.timer);
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.run : undefined;
  try {
    const d = await getJson('/ui/data');
    const now = d.now_ms;
    fill('types', typeRows(d.stats.data_types), 'no data types configured');
    fill('tiers', tierRows(d.stats.tiers), 'no tiers');
    fill('feeds', feedRows(d.feeds, now), 'no feeds configured (cache.sources)');
    fill('runs', runRows(d.runs, now), 'no guard runs recorded yet');
    if (focused !== undefined) {
      const again = [...document.querySelectorAll('button[data-run]')].find((b) => b.dataset.run === focused);
      if (again) again.focus();
    }
    if (state.openRun !== null) openAudit(state.openRun, true);
    state.lastOk = Date.now();
    setStatus(`updated ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`);
  } catch (e) {
    const late = state.lastOk && Date.now() - state.lastOk > LATE_AFTER * REFRESH_MS;
    setStatus(`${e.message}${state.lastOk ? ` · last update ${new Date(state.lastOk).toLocaleTimeString()}` : ''}`,
      late || !state.lastOk ? 'stale' : 'error');
  }
  if (!state.signedOut) state.timer = setTimeout(refresh, REFRESH_MS);
}

byId('refresh').addEventListener('click', () => refresh());
document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
refresh();
