// hubbub web client: no build step, no framework. Every piece of user content
// goes into the page through textContent, never innerHTML.

import * as api from './api.js';
import { Connection } from './conn.js';

const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;
const USER_RE = /^[a-z0-9_]{3,32}$/;
const CLIENT_RE = /^[A-Za-z0-9_-]{1,64}$/;
const RANK = { pending: 0, saved: 1, delivered: 2, seen: 3 };
const LOCAL_COMMANDS = new Set(['who', 'help', 'ping']); // replies only, nothing stored
const TYPING_RESEND_MS = 3000;   // an `active: true` at most every 3 s (server allows 2/s)
const TYPING_IDLE_MS = 5000;     // stop typing after 5 s without a key
const TYPING_EXPIRE_MS = 6000;   // others' typing expires without an update
const TYPING_GAP_MS = 650;       // between any two typing frames
const RECENT_ROOMS = 'hubbub.rooms';
const OUTBOX = 'hubbub.outbox';
const MAX_RECENT = 12;

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

// ---------- state ----------

const S = {
  me: null,
  clientId: null,
  room: null,
  conn: null,
  msgs: new Map(),        // id -> entry
  lastCursor: null,       // newest cursor seen in this room (for `since`)
  oldestCursor: null,
  moreOlder: false,
  loadingOlder: false,
  olderReq: 0,
  outbox: new Map(),      // id -> {id, room, frame}; until `saved`
  typers: new Map(),      // sender -> expiry ms
  presence: [],
  pmTarget: null,
  typingActive: false,
  typingSentAt: 0,
  typingIdle: null,
  typingWant: false,
  typingFrameAt: 0,
  typingTimer: null,
  ackedDelivered: new Set(),
  ackedSeen: new Set(),
  visibleUnseen: new Set(),
  unread: 0,
  marker: null,
  lastAuthAt: Date.now(),
  refreshEvery: 10 * 60 * 1000, // under the 15-minute access token; learnt from 1008s
  refreshTimer: null,
  joinedOnce: false,
  caughtUp: 0,
};

// ---------- identity of this tab ----------

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// The client id is stable per tab (sessionStorage). `?client=ID` forces one
// (the tests use it to open a second tab as the same client).
function initClientId() {
  const params = new URLSearchParams(location.search);
  const forced = params.get('client');
  S.clientForced = !!(forced && CLIENT_RE.test(forced));
  if (S.clientForced) {
    sessionStorage.setItem('hubbub.client', forced);
  }
  let id = sessionStorage.getItem('hubbub.client');
  if (!id || !CLIENT_RE.test(id)) {
    id = `web-${uuid()}`;
    sessionStorage.setItem('hubbub.client', id);
  }
  S.clientId = id;
  document.body.dataset.client = id;
}

// "Duplicate tab" copies sessionStorage, and two tabs with one client id
// would replace each other (4001). A new tab asks the others whether its id
// is in use and takes a fresh one if so.
function checkDuplicateTab() {
  if (!('BroadcastChannel' in window)) return Promise.resolve();
  const bc = new BroadcastChannel('hubbub-tabs');
  let settled = false;
  bc.onmessage = (e) => {
    const d = e.data || {};
    if (d.ask && d.ask === S.clientId && settled) bc.postMessage({ taken: d.ask });
    if (d.taken && d.taken === S.clientId && !settled && !S.clientForced) {
      S.clientId = `web-${uuid()}`;
      sessionStorage.setItem('hubbub.client', S.clientId);
      document.body.dataset.client = S.clientId;
    }
  };
  bc.postMessage({ ask: S.clientId });
  return new Promise((resolve) => setTimeout(() => { settled = true; resolve(); }, 150));
}

// ---------- small helpers ----------

function storeGet(storage, key, fallback) {
  try { const v = JSON.parse(storage.getItem(key)); return v ?? fallback; } catch { return fallback; }
}
function storeSet(storage, key, v) {
  try { storage.setItem(key, JSON.stringify(v)); } catch { /* quota or disabled */ }
}

function saveOutbox() {
  storeSet(sessionStorage, OUTBOX, [...S.outbox.values()]);
}
function loadOutbox() {
  for (const o of storeGet(sessionStorage, OUTBOX, [])) {
    if (o && o.id && o.frame) S.outbox.set(o.id, o);
  }
}

function fmtTime(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function announce(text) {
  const a = $('announcer');
  const p = el('p', null, text);
  a.append(p);
  while (a.childElementCount > 3) a.firstElementChild.remove();
}

function isAtBottom() {
  const s = $('scroller');
  return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
}
function scrollToBottom() {
  const s = $('scroller');
  s.scrollTop = s.scrollHeight;
}

// ---------- views ----------

function showAuth(message) {
  S.me = null;
  $('chat-view').hidden = true;
  $('user-box').hidden = true;
  $('auth-view').hidden = false;
  setConnState('signed-out');
  const err = $('auth-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('auth-username').focus();
}

function showChat(user) {
  S.me = user.username;
  $('me-name').textContent = user.username;
  $('user-box').hidden = false;
  $('auth-view').hidden = true;
  $('chat-view').hidden = false;
  $('auth-password').value = '';
  scheduleRefresh();
  joinRoom(initialRoom(), { replaceHash: true });
  $('composer-input').focus();
}

function initialRoom() {
  const h = decodeURIComponent(location.hash.replace(/^#/, '')).toLowerCase();
  if (ROOM_RE.test(h)) return h;
  const s = sessionStorage.getItem('hubbub.room');
  if (s && ROOM_RE.test(s)) return s;
  return 'general';
}

// ---------- connection state ----------

const STATE_TEXT = {
  'idle': 'Starting…',
  'connecting': 'Connecting…',
  'online': 'Online',
  'offline': 'Offline: waiting for the network',
  'reconnecting': 'Reconnecting…',
  'replaced': 'Replaced by another tab',
  'evicted': 'Disconnected (too slow); reconnecting…',
  'signed-out': 'Signed out',
};

function setConnState(state, info = {}) {
  const c = $('conn');
  c.dataset.state = state;
  let text = STATE_TEXT[state] || state;
  if ((state === 'reconnecting' || state === 'evicted') && info.at) {
    const secs = Math.max(1, Math.round((info.at - Date.now()) / 1000));
    text = state === 'evicted'
      ? `Disconnected (too slow); retrying in ${secs} s`
      : `Reconnecting in ${secs} s…`;
  }
  $('conn-text').textContent = text;
  const banner = $('conn-banner');
  const btn = $('reconnect-btn');
  if (state === 'replaced') {
    banner.hidden = false;
    banner.dataset.kind = 'replaced';
    $('conn-banner-text').textContent =
      'This chat was opened in another tab or window, so this one stopped. Messages keep arriving there.';
    btn.textContent = 'Use this tab instead';
  } else if (state === 'offline' || state === 'reconnecting' || state === 'evicted') {
    banner.hidden = false;
    banner.dataset.kind = state;
    $('conn-banner-text').textContent = state === 'offline'
      ? 'You are offline. Messages you write are kept and sent when the connection is back.'
      : 'The connection was lost. Messages you write are kept and sent when it is back.';
    btn.textContent = 'Retry now';
  } else {
    banner.hidden = true;
  }
  $('composer').dataset.conn = state;
}

// ---------- auth ----------

function scheduleRefresh() {
  clearTimeout(S.refreshTimer);
  S.refreshTimer = setTimeout(async () => {
    if (!S.me) return;
    try {
      await api.refresh();
      S.lastAuthAt = Date.now();
    } catch (e) {
      if (e.status === 401) { signedOut('Your session ended. Please log in again.'); return; }
    }
    scheduleRefresh();
  }, S.refreshEvery);
}

async function refreshAuth(force) {
  if (force) {
    // Learn the access token's lifetime from when it actually expired.
    const lived = Date.now() - S.lastAuthAt;
    if (lived > 1000) S.refreshEvery = Math.max(2000, Math.min(S.refreshEvery, lived * 0.75));
  }
  try {
    if (!force) {
      try { await api.me(); return 'ok'; } catch (e) { if (e.status !== 401) return 'error'; }
    }
    await api.refresh();
    S.lastAuthAt = Date.now();
    scheduleRefresh();
    return 'ok';
  } catch (e) {
    return e.status === 401 ? 'unauthorized' : 'error';
  }
}

function signedOut(message) {
  if (S.conn) { S.conn.stop(); S.conn = null; }
  clearTimeout(S.refreshTimer);
  resetRoomState();
  showAuth(message);
}

async function onAuthSubmit(ev) {
  ev.preventDefault();
  const mode = ev.submitter && ev.submitter.value === 'signup' ? 'signup' : 'login';
  const username = $('auth-username').value.trim().toLowerCase();
  const password = $('auth-password').value;
  const err = $('auth-error');
  const fail = (m, field) => {
    err.textContent = m; err.hidden = false;
    if (field) { $(field).setAttribute('aria-invalid', 'true'); $(field).focus(); }
  };
  $('auth-username').removeAttribute('aria-invalid');
  $('auth-password').removeAttribute('aria-invalid');
  if (!USER_RE.test(username)) return fail('Usernames are 3–32 lowercase letters, digits or underscores.', 'auth-username');
  if (new TextEncoder().encode(password).length < 8) return fail('Passwords have at least 8 characters.', 'auth-password');
  err.hidden = true;
  const buttons = $('auth-form').querySelectorAll('button');
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const r = mode === 'signup' ? await api.signup(username, password) : await api.login(username, password);
    S.lastAuthAt = Date.now();
    showChat(r.user);
  } catch (e) {
    if (e.status === 409) fail('That username is taken. Choose another, or log in.', 'auth-username');
    else if (e.status === 401) fail('Wrong username or password.');
    else if (e.status === 429) fail('Too many attempts. Wait a moment and try again.');
    else fail(e.message || 'Something went wrong. Try again.');
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

async function onLogout() {
  try { await api.logout(); } catch { /* cookies cleared or server gone: sign out anyway */ }
  S.outbox.clear();
  saveOutbox();
  signedOut();
}

// ---------- rooms ----------

function recentRooms() {
  return storeGet(localStorage, RECENT_ROOMS, []).filter((r) => ROOM_RE.test(r));
}

function rememberRoom(room) {
  const list = [room, ...recentRooms().filter((r) => r !== room)].slice(0, MAX_RECENT);
  storeSet(localStorage, RECENT_ROOMS, list);
  renderRooms();
}

function renderRooms() {
  const ul = $('room-list');
  ul.replaceChildren();
  for (const r of recentRooms()) {
    const li = el('li');
    const b = el('button', 'room-btn', `#${r}`);
    b.type = 'button';
    b.dataset.room = r;
    if (r === S.room) b.setAttribute('aria-current', 'true');
    b.addEventListener('click', () => { joinRoom(r); closeSidebar(); $('composer-input').focus(); });
    li.append(b);
    ul.append(li);
  }
}

function resetRoomState() {
  S.msgs.clear();
  S.lastCursor = null;
  S.oldestCursor = null;
  S.moreOlder = false;
  S.loadingOlder = false;
  S.typers.clear();
  S.presence = [];
  S.visibleUnseen.clear();
  S.unread = 0;
  S.marker = null;
  S.typingActive = false;
  clearTimeout(S.typingTimer);
  S.typingTimer = null;
  S.joinedOnce = false;
  seenObserver.disconnect();
  $('messages').replaceChildren();
  $('people-list').replaceChildren();
  $('people-count').textContent = '';
  $('jump-btn').hidden = true;
  renderTyping();
  renderOlderControl();
}

function joinRoom(room, { replaceHash = false } = {}) {
  if (!ROOM_RE.test(room)) return;
  if (S.conn) { S.conn.stop(); S.conn = null; }
  resetRoomState();
  S.room = room;
  sessionStorage.setItem('hubbub.room', room);
  const hash = `#${room}`;
  if (location.hash !== hash) {
    if (replaceHash) history.replaceState(null, '', hash);
    else history.pushState(null, '', hash);
  }
  $('room-title').textContent = `#${room}`;
  updateTitle();
  setPmTarget(null);
  rememberRoom(room);
  S.conn = new Connection({
    room,
    clientId: S.clientId,
    since: () => S.lastCursor,
    onFrame: onFrame,
    onState: (state, info) => onConnState(state, info),
    refreshAuth,
    ...watchdogOverride(),
  });
  S.conn.connect();
}

// `?watchdog=MS` shortens the dead-socket watchdog (tests; default 45 s of
// silence, then a probe with 10 s to answer).
function watchdogOverride() {
  const ms = Number(new URLSearchParams(location.search).get('watchdog'));
  if (!Number.isFinite(ms) || ms < 500) return {};
  return { silenceMs: ms, probeMs: Math.min(10_000, ms) };
}

function onConnState(state, info) {
  if (state === 'signed-out') { signedOut('Your session ended. Please log in again.'); return; }
  setConnState(state, info);
  if (state !== 'online' && state !== 'connecting') {
    // Typing and presence can't be kept fresh while away.
    S.typers.clear();
    renderTyping();
    $('people-list').replaceChildren();
    $('people-count').textContent = '(unknown while disconnected)';
  }
}

// ---------- frames ----------

function onFrame(f) {
  switch (f.type) {
    case 'welcome': return onWelcome(f);
    case 'history': return onHistory(f);
    case 'chat':
    case 'private': return onMessage(f, { live: true });
    case 'receipt': return onReceipt(f);
    case 'typing': return onTyping(f);
    case 'presence': return onPresence(f);
    case 'system': return systemLine(f.content);
    case 'error': return onError(f);
    default: return undefined;
  }
}

function onWelcome(f) {
  if (f.user && f.user !== S.me) { S.me = f.user; $('me-name').textContent = f.user; }
  S.welcomeResumed = !!f.resumed;
}

function onHistory(f) {
  const msgs = Array.isArray(f.messages) ? f.messages : [];
  const req = f.req || '';
  if (req.startsWith('older:')) {
    if (req !== `older:${S.olderReq}`) return; // a stale page from before a room switch
    const s = $('scroller');
    const before = s.scrollHeight - s.scrollTop;
    const list = $('messages');
    const first = list.firstChild;
    for (const m of msgs) {
      if (S.msgs.has(m.id) || (m.room && m.room !== S.room)) continue;
      const entry = renderMessage(m);
      list.insertBefore(entry.el, first);
      track(entry, m);
    }
    if (msgs.length) S.oldestCursor = msgs[0].cursor;
    S.moreOlder = !!f.more;
    S.loadingOlder = false;
    s.scrollTop = s.scrollHeight - before;
    renderOlderControl();
    return;
  }
  if (req === 'probe' || req === 'after') {
    S.caughtUp = 0;
    for (const m of msgs) onMessage(m, { live: true, fromHistory: true });
    if (S.caughtUp) announce(`${S.caughtUp} more new messages`);
    if (f.more && S.lastCursor) {
      S.conn.send({ type: 'history', after: S.lastCursor, limit: 100, req: 'after' });
    }
    return;
  }
  // The page that follows `welcome`: the latest, or everything since our cursor.
  const first = !S.joinedOnce;
  S.joinedOnce = true;
  const wasBottom = isAtBottom();
  S.caughtUp = 0;
  for (const m of msgs) onMessage(m, { live: !first, fromHistory: true });
  if (S.caughtUp) announce(S.caughtUp === 1 ? '1 new message while you were away' : `${S.caughtUp} new messages while you were away`);
  if (first) {
    if (msgs.length) S.oldestCursor = msgs[0].cursor;
    S.moreOlder = !!f.more;
    renderOlderControl();
    scrollToBottom();
  } else {
    if (S.welcomeResumed && f.more && S.lastCursor) {
      S.conn.send({ type: 'history', after: S.lastCursor, limit: 100, req: 'after' });
    }
    if (wasBottom) scrollToBottom();
  }
  resendOutbox();
}

// Unsaved messages of this room go out again, same ids: the server stores an
// id once and answers a duplicate with `saved`.
function resendOutbox() {
  for (const o of [...S.outbox.values()]) {
    if (o.user !== S.me) { S.outbox.delete(o.id); saveOutbox(); continue; } // someone else's, from before a re-login
    if (o.room !== S.room) continue;
    if (!S.msgs.has(o.id)) renderPending(o);
    S.conn.send(o.frame);
  }
}

function onMessage(m, { live, fromHistory = false }) {
  if (!m || !m.id) return;
  if (m.room && m.room !== S.room) return;
  if (m.cursor) S.lastCursor = m.cursor;
  const own = m.sender === S.me;
  let entry = S.msgs.get(m.id);
  if (entry) {
    updateEntry(entry, m);
  } else {
    const wasBottom = isAtBottom();
    entry = renderMessage(m);
    const list = $('messages');
    const unseen = live && !own && (!wasBottom || document.visibilityState !== 'visible');
    if (unseen && !S.marker) {
      S.marker = el('li', 'new-marker');
      S.marker.append(el('span', null, 'New messages'));
      list.append(S.marker);
    }
    list.append(entry.el);
    if (live && !own) {
      if (fromHistory) {
        S.caughtUp += 1; // announced as one summary after the page
      } else {
        const who = m.type === 'private' ? `Private message from ${m.sender}` : m.sender;
        announce(`${who}: ${m.content}`);
      }
    }
    if (unseen) {
      S.unread += 1;
      updateTitle();
      const jb = $('jump-btn');
      jb.textContent = S.unread === 1 ? '1 new message below' : `${S.unread} new messages below`;
      jb.hidden = false;
    } else if (wasBottom || own) {
      scrollToBottom();
    }
  }
  track(entry, m);
  // A message from someone ends their typing.
  if (!own && S.typers.delete(m.sender)) renderTyping();
}

// Own messages: the status history reports. Others': `delivered` now (once
// per tab), `seen` when it is on screen.
function track(entry, m) {
  if (entry.own) {
    if (m.status && RANK[m.status] >= RANK.saved) markSaved(m.id);
    if (m.status) setStatus(entry, m.status);
    return;
  }
  if (!S.ackedDelivered.has(m.id) && !S.ackedSeen.has(m.id)) {
    S.ackedDelivered.add(m.id);
    if (S.conn) S.conn.ack(m.id, 'delivered');
  }
  if (!S.ackedSeen.has(m.id)) seenObserver.observe(entry.el);
}

function renderMessage(m) {
  const own = m.sender === S.me;
  const li = el('li', 'msg');
  li.dataset.id = m.id;
  li.dataset.sender = m.sender;
  if (own) li.classList.add('own');
  const meta = el('div', 'meta');
  const sender = el('span', 'sender', own ? `${m.sender} (you)` : m.sender);
  const pm = el('span', 'pm-label');
  const time = el('time', 'ts');
  meta.append(sender, pm, time);
  const body = el('div', 'body');
  const tick = el('span', 'tick');
  const tickIcon = el('span', 'tick-icon');
  tickIcon.setAttribute('aria-hidden', 'true');
  const tickText = el('span', 'tick-text');
  tick.append(tickIcon, tickText);
  tick.hidden = true;
  li.append(meta, body, tick);
  const entry = { id: m.id, el: li, own, status: null, body, pm, time, tick, tickIcon, tickText, sender: m.sender };
  S.msgs.set(m.id, entry);
  updateEntry(entry, m);
  return entry;
}

function updateEntry(entry, m) {
  const li = entry.el;
  const priv = m.type === 'private';
  li.classList.toggle('private', priv);
  li.classList.toggle('action', !!m.action);
  if (priv) {
    entry.pm.textContent = entry.own ? `private to ${m.target}` : 'private to you';
    entry.pm.hidden = false;
  } else {
    entry.pm.textContent = '';
    entry.pm.hidden = true;
  }
  entry.body.textContent = m.action ? `* ${m.sender} ${m.content}` : m.content;
  if (m.ts) { entry.time.dateTime = m.ts; entry.time.textContent = fmtTime(m.ts); }
  if (m.cursor) li.dataset.cursor = m.cursor;
}

// Visible words next to the marks, so the state never rests on colour or glyphs alone.
const STATUS_TEXT = {
  pending: ['…', 'Sending'],
  saved: ['✓', 'Saved'],
  delivered: ['✓✓', 'Delivered'],
  seen: ['✓✓', 'Seen'],
  failed: ['!', 'Not sent'],
};

function setStatus(entry, status, detail) {
  if (!entry || !entry.own) return;
  if (status !== 'failed' && entry.status && entry.status !== 'failed'
      && RANK[status] <= RANK[entry.status]) return;
  entry.status = status;
  entry.el.dataset.status = status;
  entry.tick.hidden = false;
  entry.tick.dataset.status = status;
  const [icon, text] = STATUS_TEXT[status];
  entry.tickIcon.textContent = icon;
  entry.tickText.textContent = detail ? `${text}: ${detail}` : text;
}

function markSaved(id) {
  if (S.outbox.delete(id)) saveOutbox();
}

function onReceipt(f) {
  if (f.status === 'saved') markSaved(f.id);
  const entry = S.msgs.get(f.id);
  if (entry && RANK[f.status] !== undefined) setStatus(entry, f.status);
}

function onError(f) {
  if (f.code === 'rate_limited') {
    // Something was dropped; unsaved messages go again once the wait is over.
    setTimeout(() => { if (S.conn && S.conn.open) for (const o of S.outbox.values()) if (o.room === S.room) S.conn.send(o.frame); },
      (Number(f.retry_after_ms) || 1000) + 100);
    return;
  }
  const entry = f.id ? S.msgs.get(f.id) : null;
  if (f.id && S.outbox.has(f.id)) {
    if (f.code === 'unavailable') {
      const o = S.outbox.get(f.id);
      setTimeout(() => { if (S.conn && S.outbox.has(o.id)) S.conn.send(o.frame); }, Number(f.retry_after_ms) || 1000);
      return;
    }
    S.outbox.delete(f.id);
    saveOutbox();
  }
  if (f.code === 'unknown_command' && entry) {
    entry.el.remove();
    S.msgs.delete(f.id);
    systemLine(f.message || 'Unknown command. Type /help for the list.', 'error');
    return;
  }
  if (entry) {
    setStatus(entry, 'failed', f.message || f.code);
    return;
  }
  systemLine(f.message || f.code, 'error');
}

function systemLine(text, kind = 'system') {
  if (!text) return;
  const wasBottom = isAtBottom();
  const li = el('li', kind === 'error' ? 'system error' : 'system');
  li.append(el('span', 'visually-hidden', kind === 'error' ? 'Error: ' : 'Notice: '));
  li.append(document.createTextNode(text));
  $('messages').append(li);
  if (wasBottom) scrollToBottom();
}

// ---------- sending ----------

function parseCommand(text) {
  const m = /^\/(\S+)(?:\s+([\s\S]*))?$/.exec(text);
  if (!m) return null;
  return { word: m[1].toLowerCase(), rest: (m[2] || '').trim() };
}

function renderPending(o) {
  const m = {
    id: o.id, room: o.room, sender: S.me, content: o.display, type: o.kind,
    target: o.target, ts: o.ts,
  };
  const entry = renderMessage(m);
  $('messages').append(entry.el);
  setStatus(entry, 'pending');
  return entry;
}

function sendText(raw) {
  const text = raw.trim();
  if (!text || !S.conn) return false;
  if ([...text].length > 4000) {
    systemLine('Messages are at most 4000 characters.', 'error');
    return false;
  }
  const id = uuid();
  const cmd = text.startsWith('/') ? parseCommand(text) : null;
  if (cmd && LOCAL_COMMANDS.has(cmd.word) && !S.pmTarget) {
    // Replies only: nothing is stored, so nothing to track.
    S.conn.send({ type: 'chat', id, content: text });
    return true;
  }
  let frame; let kind = 'chat'; let target; let display = text;
  if (S.pmTarget) {
    frame = { type: 'private', id, target: S.pmTarget, content: text };
    kind = 'private'; target = S.pmTarget;
  } else {
    frame = { type: 'chat', id, content: text };
    if (cmd && cmd.word === 'msg') {
      const pm = /^(\S+)\s+([\s\S]+)$/.exec(cmd.rest);
      if (pm) { kind = 'private'; target = pm[1]; display = pm[2].trim(); }
    }
  }
  const o = { id, user: S.me, room: S.room, frame, kind, target, display, ts: new Date().toISOString() };
  S.outbox.set(id, o);
  saveOutbox();
  if (S.marker) { S.marker.remove(); S.marker = null; }
  renderPending(o);
  scrollToBottom();
  S.conn.send(frame);
  S.typingActive = false;
  clearTimeout(S.typingIdle);
  clearTimeout(S.typingTimer); // a message ends typing for everyone who sees it
  S.typingTimer = null;
  return true;
}

function onComposerSubmit(ev) {
  ev.preventDefault();
  const input = $('composer-input');
  if (sendText(input.value)) input.value = '';
  input.focus();
}

function onComposerKey(ev) {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $('composer').requestSubmit();
  } else if (ev.key === 'Escape' && S.pmTarget) {
    ev.preventDefault();
    setPmTarget(null);
  }
}

function onComposerInput() {
  const input = $('composer-input');
  if (!S.conn || !S.conn.open) return;
  const now = Date.now();
  if (!input.value.trim()) {
    if (S.typingActive) { sendTyping(false); S.typingActive = false; }
    clearTimeout(S.typingIdle);
    return;
  }
  if (!S.typingActive || now - S.typingSentAt > TYPING_RESEND_MS) {
    sendTyping(true);
    S.typingActive = true;
    S.typingSentAt = now;
  }
  clearTimeout(S.typingIdle);
  S.typingIdle = setTimeout(() => {
    if (S.typingActive) { sendTyping(false); S.typingActive = false; }
  }, TYPING_IDLE_MS);
}

// The server forwards at most one typing frame per user every 500 ms and
// drops the rest, so frames are spaced out here and the latest state wins.
function sendTyping(active) {
  S.typingWant = active;
  const wait = S.typingFrameAt + TYPING_GAP_MS - Date.now();
  if (wait > 0) {
    if (!S.typingTimer) S.typingTimer = setTimeout(flushTyping, wait);
    return;
  }
  flushTyping();
}

function flushTyping() {
  S.typingTimer = null;
  if (!S.conn || !S.conn.open) return;
  S.conn.send({ type: 'typing', active: S.typingWant });
  S.typingFrameAt = Date.now();
}

function setPmTarget(user) {
  S.pmTarget = user;
  $('pm-chip').hidden = !user;
  $('pm-target').textContent = user || '';
  $('composer').classList.toggle('is-private', !!user);
  $('composer-input').placeholder = user ? `Private message to ${user}…` : 'Write a message…';
}

// ---------- typing and presence ----------

function onTyping(f) {
  if (!f.sender || f.sender === S.me) return;
  if (f.active) S.typers.set(f.sender, Date.now() + TYPING_EXPIRE_MS);
  else S.typers.delete(f.sender);
  renderTyping();
}

function renderTyping() {
  const now = Date.now();
  for (const [u, exp] of S.typers) if (exp <= now) S.typers.delete(u);
  const names = [...S.typers.keys()].sort();
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length === 3) text = `${names[0]}, ${names[1]} and ${names[2]} are typing…`;
  else if (names.length > 3) text = `${names[0]}, ${names[1]} and ${names.length - 2} others are typing…`;
  const t = $('typing');
  if (t.textContent !== text) t.textContent = text;
}
setInterval(renderTyping, 1000);

function onPresence(f) {
  S.presence = Array.isArray(f.users) ? f.users : [];
  const ul = $('people-list');
  ul.replaceChildren();
  for (const u of S.presence) {
    const li = el('li');
    if (u === S.me) {
      li.append(el('span', 'person me', `${u} (you)`));
    } else {
      const b = el('button', 'person', u);
      b.type = 'button';
      b.dataset.user = u;
      b.setAttribute('aria-label', `${u}: send a private message`);
      b.addEventListener('click', () => {
        setPmTarget(u);
        closeSidebar();
        $('composer-input').focus();
      });
      li.append(b);
    }
    ul.append(li);
  }
  $('people-count').textContent = `(${f.count ?? S.presence.length})`;
  let changed = false;
  for (const u of S.typers.keys()) if (!S.presence.includes(u)) { S.typers.delete(u); changed = true; }
  if (changed) renderTyping();
}

// ---------- seen receipts ----------

// On screen = at least half of it, or (for a message taller than the view)
// a good part of the view.
const seenObserver = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const id = e.target.dataset.id;
    const enough = e.isIntersecting && (e.intersectionRatio >= 0.5 || e.intersectionRect.height >= 120);
    if (enough) S.visibleUnseen.add(id);
    else S.visibleUnseen.delete(id);
  }
  flushSeen();
}, { root: null, threshold: [0, 0.1, 0.25, 0.5, 1] });

function flushSeen() {
  if (document.visibilityState !== 'visible' || !S.conn) return;
  for (const id of S.visibleUnseen) {
    const entry = S.msgs.get(id);
    S.visibleUnseen.delete(id);
    if (!entry || entry.own || S.ackedSeen.has(id)) continue;
    S.ackedSeen.add(id);
    S.conn.ack(id, 'seen');
    seenObserver.unobserve(entry.el);
  }
  if (isAtBottom()) clearUnread();
}

function clearUnread() {
  S.unread = 0;
  $('jump-btn').hidden = true;
  updateTitle();
}

function updateTitle() {
  const base = S.room ? `#${S.room} · hubbub` : 'hubbub';
  document.title = S.unread ? `(${S.unread}) ${base}` : base;
}

// ---------- older pages ----------

function requestOlder() {
  if (!S.moreOlder || S.loadingOlder || !S.oldestCursor || !S.conn || !S.conn.open) return;
  S.loadingOlder = true;
  S.olderReq += 1;
  S.conn.send({ type: 'history', before: S.oldestCursor, limit: 50, req: `older:${S.olderReq}` });
  renderOlderControl();
}

function renderOlderControl() {
  const p = $('history-status');
  p.replaceChildren();
  if (S.loadingOlder) {
    p.textContent = 'Loading older messages…';
    p.hidden = false;
  } else if (S.moreOlder) {
    const b = el('button', 'btn btn-small btn-secondary', 'Load older messages');
    b.type = 'button';
    b.addEventListener('click', requestOlder);
    p.append(b);
    p.hidden = false;
  } else if (S.joinedOnce) {
    p.textContent = 'This is the start of the room.';
    p.hidden = false;
  } else {
    p.hidden = true;
  }
}

// ---------- sidebar (narrow screens) ----------

function closeSidebar() {
  $('sidebar').classList.remove('open');
  $('sidebar-toggle').setAttribute('aria-expanded', 'false');
}

// ---------- wiring ----------

function bind() {
  $('auth-form').addEventListener('submit', onAuthSubmit);
  $('logout-btn').addEventListener('click', onLogout);
  $('composer').addEventListener('submit', onComposerSubmit);
  $('composer-input').addEventListener('keydown', onComposerKey);
  $('composer-input').addEventListener('input', onComposerInput);
  $('pm-cancel').addEventListener('click', () => { setPmTarget(null); $('composer-input').focus(); });
  $('join-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('join-input');
    const room = input.value.trim().replace(/^#/, '').toLowerCase();
    const err = $('join-error');
    if (!ROOM_RE.test(room)) {
      err.textContent = 'Room names start with a letter or digit and use a–z, 0–9, “-” and “_” (at most 32).';
      err.hidden = false;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    err.hidden = true;
    input.removeAttribute('aria-invalid');
    input.value = '';
    joinRoom(room);
    closeSidebar();
    $('composer-input').focus();
  });
  $('reconnect-btn').addEventListener('click', () => { if (S.conn) S.conn.reconnectNow(); });
  $('jump-btn').addEventListener('click', () => {
    scrollToBottom();
    clearUnread();
    $('composer-input').focus();
  });
  $('scroller').addEventListener('scroll', () => {
    const s = $('scroller');
    if (s.scrollTop < 80) requestOlder();
    if (isAtBottom() && document.visibilityState === 'visible') clearUnread();
  }, { passive: true });
  $('sidebar-toggle').addEventListener('click', () => {
    const open = !$('sidebar').classList.contains('open');
    $('sidebar').classList.toggle('open', open);
    $('sidebar-toggle').setAttribute('aria-expanded', String(open));
    if (open) $('join-input').focus();
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key !== 'Escape') return;
    if ($('sidebar').classList.contains('open')) { closeSidebar(); $('sidebar-toggle').focus(); return; }
    if (S.pmTarget) { setPmTarget(null); $('composer-input').focus(); }
  });
  document.addEventListener('visibilitychange', flushSeen);
  window.addEventListener('hashchange', () => {
    const h = decodeURIComponent(location.hash.replace(/^#/, '')).toLowerCase();
    if (S.me && ROOM_RE.test(h) && h !== S.room) joinRoom(h, { replaceHash: true });
  });
}

async function findSession(before = Promise.resolve()) {
  let user;
  try {
    user = await api.whoami();
    await before;
  } catch (e) {
    // Server or network down: say so, keep the form usable, and look again.
    showAuth('The server cannot be reached right now. Retrying…');
    setTimeout(() => { if (!S.me) findSession(); }, 5000);
    return;
  }
  if (S.me) return;
  if (user) showChat(user);
  else showAuth();
}

async function boot() {
  initClientId();
  loadOutbox();
  bind();
  renderRooms();
  setConnState('idle');
  await findSession(checkDuplicateTab());
}

boot();
