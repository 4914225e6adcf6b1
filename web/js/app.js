// hubbub web client, the entry module: no build step, no framework.
// Layout: util/state (data), protocol (server frames -> state, no DOM),
// conn (the socket), api/auth (HTTP and the token schedule), render (DOM),
// composer (the message box), rooms/roomlist (the room list, badges, read
// positions); this file wires them to the page.
//
// One socket for all the user's rooms (`/ws?multi=1`): after each welcome
// every known room is subscribed (the shown one first) with its own `since`.
// Each room keeps its own state and message buffer (rooms.js roomState);
// `S` is the shown room's (a proxy), so switching rooms swaps the buffer
// shown and never touches the socket. Frames of a room that is not shown
// go through the same handlers with a `ui` that draws nothing.
//
// Counters for tests and for curious people, on <body>: data-client (this
// tab's client id), data-welcomes (sockets welcomed), data-refreshes (access
// tokens refreshed), data-token-closes (sockets closed with 1008).

import * as api from './api.js';
import { createAuth } from './auth.js';
import { NodeList } from './nodes.js';
import * as P from './protocol.js';
import { createState } from './state.js';
import { createRooms } from './roomsctl.js';
import {
  $, createView, setConnState, setNode, announce, scrollToBottom, updateTitle, isAtBottom,
} from './render.js';
import { createComposer } from './composer.js';
import { Notifier } from './notify.js';
import { ROOM_RE, USER_RE, CLIENT_RE, uuid, storeGet, storeSet } from './util.js';

const OUTBOX = 'hubbub.outbox';

const G = createState(); // the page's state (and, signed out, an empty room)
// The rooms on the one socket; `S` is the shown room's state (roomsctl.js).
const rooms = createRooms(G, {
  saveOutbox,
  count,
  notify: (m, room) => { if (notifier.consider(m, { me: G.me, room })) count('notifications'); },
  leaveRoom: () => { composer.reset(); setPmTarget(null); },
  roomShown: () => renderNotifyButtons(),
  onPick: (r) => { rooms.showRoom(r); closeSidebar(); $('composer-input').focus(); },
  onConnState,
  connOptions: () => ({ refreshAuth: auth.refreshAuth, nodes, ...watchdogOverride() }),
});
const { S, ctx } = rooms;
// Off until the user turns them on (the permission is asked for only in
// that click); `Notification` is read when used, not captured at load.
const notifier = new Notifier({
  get Notification() { return window.Notification; },
  storage: {
    getItem: (k) => { try { return localStorage.getItem(k); } catch { return null; } },
    setItem: (k, v) => { try { localStorage.setItem(k, v); } catch { /* quota or disabled */ } },
  },
  hidden: () => document.visibilityState !== 'visible',
  focus: () => window.focus(),
});
ctx.ui = createView(S, {
  onSeen: (ids) => { if (S.conn) P.ackSeen(ctx, ids); },
  requestOlder,
  pickUser: (u) => { setPmTarget(u); closeSidebar(); $('composer-input').focus(); },
  onIncoming: (m) => rooms.onIncoming(m),
});
const composer = createComposer(ctx);
const auth = createAuth({
  api: { refresh: api.refresh, me: api.me, clockSkew: () => api.clockSkewMs },
  onRenew: () => { count('refreshes'); if (G.conn) G.conn.renew(); },
  onSignedOut: (msg) => signedOut(msg),
});
const body = document.body;
// The cluster's nodes, kept across rooms; the API follows the socket's node.
const nodes = new NodeList({
  fetchNodes: api.clusterNodes,
  // Asked before each socket: the user's home node (see nodes.js).
  fetchRoute: api.clusterRoute,
  origin: location.origin,
  onMove: (n) => api.setBase(n ? n.url : ''),
  // The list comes after the welcome: the node's name is known only then.
  onList: () => { if (G.conn && G.conn.state === 'online') showNode(); },
});
let welcomedAt = null; // the node of the last welcome: a different one is a move
function count(name) {
  body.dataset[name] = String(Number(body.dataset[name] || 0) + 1);
}

// ---------- identity of this tab ----------

// The client id is stable per tab (sessionStorage). `?client=ID` forces one
// (the tests use it to open a second tab as the same client).
function initClientId() {
  const forced = new URLSearchParams(location.search).get('client');
  S.clientForced = !!(forced && CLIENT_RE.test(forced));
  if (S.clientForced) sessionStorage.setItem('hubbub.client', forced);
  let id = sessionStorage.getItem('hubbub.client');
  if (!id || !CLIENT_RE.test(id)) {
    id = `web-${uuid()}`;
    sessionStorage.setItem('hubbub.client', id);
  }
  S.clientId = id;
  body.dataset.client = id;
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
      body.dataset.client = S.clientId;
    }
  };
  bc.postMessage({ ask: S.clientId });
  return new Promise((resolve) => setTimeout(() => { settled = true; resolve(); }, 150));
}

function saveOutbox() {
  storeSet(sessionStorage, OUTBOX, [...S.outbox.values()]);
}
function loadOutbox() {
  for (const o of storeGet(sessionStorage, OUTBOX, [])) {
    if (o && o.id && o.frame) S.outbox.set(o.id, o);
  }
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

// `r`: a body with `user` and `access_expires_at`.
function showChat(r) {
  S.me = r.user.username;
  $('me-name').textContent = S.me;
  $('user-box').hidden = false;
  $('auth-view').hidden = true;
  $('chat-view').hidden = false;
  $('auth-password').value = '';
  auth.start(r);
  rooms.showRoom(initialRoom(), { replaceHash: true });
  rooms.loadRooms();
  $('composer-input').focus();
}

// The room named in the URL, else this tab's last, else the first room
// this browser remembers that the user did not leave, else general.
function initialRoom() {
  const h = decodeURIComponent(location.hash.replace(/^#/, '')).toLowerCase();
  if (ROOM_RE.test(h)) return h;
  const s = sessionStorage.getItem('hubbub.room');
  if (s && ROOM_RE.test(s)) return s;
  return rooms.firstRemembered() || 'general';
}

// ---------- auth ----------

function signedOut(message) {
  rooms.reset();
  auth.stop();
  resetRoomView();
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
    showChat(r);
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

function resetRoomView() {
  composer.reset();
  ctx.ui.clearMessages();
  $('people-list').replaceChildren();
  $('people-count').textContent = '';
  $('jump-btn').hidden = true;
  ctx.ui.renderTyping();
  ctx.ui.renderOlder();
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
  if (info && info.reason === 'token') count('tokenCloses');
  setConnState(state, info);
  if (state === 'online') showNode();
  if (state !== 'online' && state !== 'connecting') {
    // Typing and presence can't be kept fresh while away.
    rooms.disconnected();
    ctx.ui.renderTyping();
    $('people-list').replaceChildren();
    $('people-count').textContent = '(unknown while disconnected)';
  }
}

// Which node the socket is on (hidden on a single node); a move is announced.
function showNode() {
  const name = nodes.name();
  setNode(name);
  if (!name || name === welcomedAt) return;
  if (welcomedAt) announce(`Connection moved to server ${name}.`);
  welcomedAt = name;
}

// ---------- older pages ----------

function requestOlder() {
  if (!S.moreOlder || S.loadingOlder || !S.oldestCursor || !S.conn || !S.conn.open) return;
  S.loadingOlder = true;
  S.olderReq += 1;
  S.conn.send({ type: 'history', before: S.oldestCursor, limit: 50, req: `older:${S.olderReq}` });
  ctx.ui.renderOlder();
}

// ---------- private mode and sidebar ----------

function setPmTarget(user) {
  S.pmTarget = user;
  $('pm-chip').hidden = !user;
  $('pm-target').textContent = user || '';
  $('composer').classList.toggle('is-private', !!user);
  $('composer-input').placeholder = user ? `Private message to ${user}…` : 'Write a message…';
}

function closeSidebar() {
  $('sidebar').classList.remove('open');
  $('sidebar-toggle').setAttribute('aria-expanded', 'false');
}

// ---------- desktop notifications ----------

function renderNotifyButtons() {
  const on = $('notify-btn');
  const mute = $('mute-btn');
  on.hidden = !notifier.supported;
  mute.hidden = !notifier.supported;
  on.setAttribute('aria-pressed', String(notifier.enabled));
  $('notify-state').textContent = notifier.enabled ? 'on' : 'off';
  const muted = !!S.room && notifier.isMuted(S.room);
  mute.setAttribute('aria-pressed', String(muted));
}

// The only place the permission is asked for: this click.
async function onNotifyClick() {
  const r = await notifier.toggle();
  const note = $('notify-note');
  note.hidden = r !== 'denied';
  note.textContent = r === 'denied'
    ? 'Notifications are blocked for this site: allow them in the browser’s site settings, then try again.'
    : '';
  renderNotifyButtons();
}

function onMuteClick() {
  if (!S.room) return;
  notifier.setMuted(S.room, !notifier.isMuted(S.room));
  renderNotifyButtons();
}

// Back to the tab: the count in the title is said once, then cleared.
function onVisibility() {
  if (document.visibilityState === 'visible' && S.hiddenUnread) {
    const n = S.hiddenUnread;
    S.hiddenUnread = 0;
    updateTitle(S);
    announce(n === 1 ? '1 new message arrived while this tab was in the background'
      : `${n} new messages arrived while this tab was in the background`);
  }
  ctx.ui.flushSeen();
  rooms.scheduleRead();
}

// ---------- wiring ----------

function onComposerKey(ev) {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $('composer').requestSubmit();
  } else if (ev.key === 'Escape' && S.pmTarget) {
    ev.preventDefault();
    setPmTarget(null);
  }
}

// Leave the shown room (roomsctl.js: what leaving means); another is shown.
function onLeaveClick() {
  const room = S.room;
  const now = rooms.leave(room);
  if (!now) return;
  announce(`You left #${room}. Now in #${now}.`);
  $('composer-input').focus();
}

function onJoinSubmit(ev) {
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
  rooms.showRoom(room);
  closeSidebar();
  $('composer-input').focus();
}

function bind() {
  $('auth-form').addEventListener('submit', onAuthSubmit);
  $('logout-btn').addEventListener('click', onLogout);
  $('composer').addEventListener('submit', composer.onSubmit);
  $('composer-input').addEventListener('keydown', onComposerKey);
  $('composer-input').addEventListener('input', composer.onInput);
  $('pm-cancel').addEventListener('click', () => { setPmTarget(null); $('composer-input').focus(); });
  $('join-form').addEventListener('submit', onJoinSubmit);
  $('reconnect-btn').addEventListener('click', () => { if (G.conn) G.conn.reconnectNow(); });
  $('jump-btn').addEventListener('click', () => {
    if (S.newerTrimmed) {
      P.reloadLatest(ctx);
    } else {
      scrollToBottom();
      ctx.ui.clearUnread();
    }
    $('composer-input').focus();
  });
  $('scroller').addEventListener('scroll', () => {
    const s = $('scroller');
    if (s.scrollTop < 80) requestOlder();
    if (isAtBottom() && document.visibilityState === 'visible') ctx.ui.clearUnread();
    ctx.ui.syncJump();
    rooms.scheduleRead();
  }, { passive: true });
  $('notify-btn').addEventListener('click', onNotifyClick);
  $('mute-btn').addEventListener('click', onMuteClick);
  $('leave-btn').addEventListener('click', onLeaveClick);
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
  document.addEventListener('visibilitychange', onVisibility);
  window.addEventListener('focus', () => rooms.scheduleRead());
  window.addEventListener('hashchange', () => {
    const h = decodeURIComponent(location.hash.replace(/^#/, '')).toLowerCase();
    if (S.me && ROOM_RE.test(h) && h !== S.room) rooms.showRoom(h, { replaceHash: true });
  });
  setInterval(ctx.ui.renderTyping, 1000); // others' typing expires
  setInterval(ctx.ui.relayout, 60_000); // "Today" becomes "Yesterday" at midnight
}

async function findSession(before = Promise.resolve()) {
  let r;
  try {
    r = await api.whoami();
    await before;
  } catch (e) {
    // Server or network down: say so, keep the form usable, and look again.
    showAuth('The server cannot be reached right now. Retrying…');
    setTimeout(() => { if (!S.me) findSession(); }, 5000);
    return;
  }
  if (S.me) return;
  if (r) showChat(r);
  else showAuth();
}

async function boot() {
  initClientId();
  loadOutbox();
  bind();
  rooms.renderRooms();
  setConnState('idle');
  await findSession(checkDuplicateTab());
}

boot();
