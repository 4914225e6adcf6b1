// The user's rooms on the one multi-room socket: their states, which one
// is shown, the subscriptions after each welcome, the frames routed to their
// room, the unread counts and the read positions. `S` is the shown room's
// state (a proxy: the view, the composer and the page read the shown room
// through it), `ctx` the protocol handlers' context for the shown room; a
// room not shown gets the same handlers with a `ui` that draws nothing.
// Switching rooms swaps `S`'s target and draws the buffer: the socket stays.

import * as api from './api.js';
import { Connection } from './conn.js';
import * as P from './protocol.js';
import {
  roomState, countsAfter, readMovesForward, countIncoming, subscriptionOrder, totalUnread, MAX_ROOMS,
  noteActivity, byActivity, leftAfter,
} from './rooms.js';
import { createRoomList, newestVisibleCursor } from './roomlist.js';
import { $, scrollToBottom, updateTitle, isAtBottom, announce } from './render.js';
import { ROOM_RE, storeGet, storeSet, realTimers } from './util.js';

const RECENT_ROOMS = 'hubbub.rooms';
const LEFT_ROOMS = 'hubbub.left.'; // + user: the rooms they left in this browser
const MAX_RECENT = 12;
const READ_DEBOUNCE_MS = 500; // a `read` at most this often (they count against the frame rate)

/**
 * @param {object} G  the page's state (state.js; signed out, an empty room)
 * @param {object} deps { saveOutbox, count(name), notify(m, room), leaveRoom(),
 *   roomShown(room), onPick(room), onConnState(state, info), connOptions() }
 */
export function createRooms(G, deps) {
  const rooms = new Map(); // room -> its state (rooms.js roomState)
  let roomNames = [];      // the room list's order
  let cur = G;             // the shown room's state
  const pendingSubs = [];  // rooms subscribed for, not yet answered, in order
  const unsubs = new Map(); // room -> `unsubscribe`s sent on this socket, not yet answered
  const S = new Proxy(G, {
    get: (_, k) => cur[k],
    set: (_, k, v) => { cur[k] = v; return true; },
    has: (_, k) => k in cur,
  });
  const { saveOutbox } = deps;
  const ctx = { S, ui: null, timers: realTimers, saveOutbox };
  // The `ui` of a room that is not shown: nothing drawn; its new messages
  // still raise its badge, the tab's hidden count and notifications.
  const headless = new Proxy({
    atBottom: () => true,
    visible: () => false,
    incoming(m) {
      if (document.visibilityState !== 'visible') G.hiddenUnread += 1;
      onIncoming(m);
    },
  }, { get: (t, k) => (k in t ? t[k] : () => {}) });
  const roomList = createRoomList({ onPick: (r) => deps.onPick(r) });

  function recentRooms() {
    return storeGet(localStorage, RECENT_ROOMS, []).filter((r) => ROOM_RE.test(r));
  }

  function rememberRoom(room) {
    const list = [room, ...recentRooms().filter((r) => r !== room)].slice(0, MAX_RECENT);
    storeSet(localStorage, RECENT_ROOMS, list);
    // A new room goes on top until its messages say where it belongs.
    if (!roomNames.includes(room)) roomNames = [room, ...roomNames];
    renderRooms();
  }

  // The rooms this user left in this browser: the server keeps every room
  // ever joined in GET /api/rooms, so a reload would bring them back.
  const leftKey = () => `${LEFT_ROOMS}${G.me}`;
  function leftRooms() {
    if (!G.me) return [];
    return storeGet(localStorage, leftKey(), []).filter((r) => ROOM_RE.test(r));
  }
  function setLeft(room, isLeft) {
    if (!G.me) return;
    const before = leftRooms();
    if (!isLeft && !before.includes(room)) return;
    storeSet(localStorage, leftKey(), leftAfter(before, room, isLeft));
  }

  // Another tab of this browser left a room (the same user's list): this tab
  // leaves it too. (Its own write comes back to no tab: rooms already gone.)
  window.addEventListener('storage', (e) => {
    if (!G.me || e.key !== leftKey()) return;
    for (const r of leftRooms()) {
      if (!rooms.has(r)) continue;
      const shown = cur.room === r;
      const now = leave(r);
      if (now) announce(`You left #${r} in another tab.${shown ? ` Now in #${now}.` : ''}`);
    }
  });

  // Newest activity first (as GET /api/rooms); roomlist.js holds the order
  // still while the user is in the list.
  function renderRooms() {
    roomNames = byActivity(roomNames, (r) => rooms.get(r) && rooms.get(r).activity);
    roomList.render(roomNames, rooms, cur === G ? null : cur.room);
    G.titleCount = totalUnread(rooms.values());
    updateTitle(S);
    renderLeave();
  }

  // "Leave #room" for the shown room; not for the only room (there would be
  // nothing to show instead).
  function renderLeave() {
    const b = $('leave-btn');
    const room = cur === G ? null : cur.room;
    b.hidden = !room || roomNames.filter((r) => r !== room).length === 0;
    if (room && $('leave-room').textContent !== `#${room}`) $('leave-room').textContent = `#${room}`;
  }

  // A room's frames go out with its name (the socket is multi-room).
  function roomConn(R) {
    return {
      send: (f) => { if (G.conn) G.conn.send({ ...f, room: R.room }); },
      ack: (id, status) => { if (G.conn) G.conn.ack(id, status, R.room); },
      get open() { return !!G.conn && G.conn.open && R.subscribed; },
      get limits() { return G.conn ? G.conn.limits : undefined; },
    };
  }

  /** The room's state, created (and subscribed, when the socket is up) on first use. */
  function ensureRoom(room) {
    let R = rooms.get(room);
    if (R) return R;
    R = roomState(G, room);
    R.conn = roomConn(R);
    rooms.set(room, R);
    if (G.conn && G.conn.state === 'online') subscribe(R);
    return R;
  }

  // Over the rooms-per-connection limit a room is listed but not live
  // (`overLimit`), except the shown one: the room shown longest ago gives
  // its subscription up for it (and resumes with `since` when shown again).
  function subscribe(R) {
    if (R.subscribing) return;
    const live = [...rooms.values()].filter((x) => x.subscribing);
    if (live.length >= maxRooms()) {
      R.overLimit = true;
      if (R !== cur) return;
      const old = live.filter((x) => x !== cur).sort((a, b) => (a.shownAt || 0) - (b.shownAt || 0))[0];
      if (!old) return;
      old.subscribing = false;
      old.subscribed = false;
      old.overLimit = true;
      unsubscribe(old.room);
    }
    R.overLimit = false;
    R.subscribed = false;
    R.subscribing = true;
    pendingSubs.push(R.room);
    const f = { type: 'subscribe', room: R.room };
    if (R.lastCursor) f.since = R.lastCursor; // exact resume, per room
    G.conn.send(f);
  }

  // The answer (`unsubscribed`) is only counted off: the room may be
  // subscribed again (or left) by the time it comes.
  function unsubscribe(room) {
    unsubs.set(room, (unsubs.get(room) || 0) + 1);
    G.conn.send({ type: 'unsubscribe', room });
  }

  function maxRooms() {
    const l = G.conn && G.conn.limits;
    return G.roomLimit || (l && Number(l.max_rooms)) || MAX_ROOMS;
  }

  // The server's limit is lower than ours: it answers the subscribes in
  // order and this error names no room, so it is the oldest unanswered one's.
  function onTooManyRooms(f) {
    const R = rooms.get(pendingSubs.shift());
    G.roomLimit = [...rooms.values()].filter((x) => x.subscribed).length || 1;
    if (!R) return;
    R.subscribing = false;
    R.overLimit = true;
    if (R === cur) subscribe(R); // again, in place of the room shown longest ago
  }

  // A new socket: every room again, the shown one first, each with its own `since`.
  function onWelcome(f) {
    P.onWelcome(ctx, f);
    pendingSubs.length = 0;
    unsubs.clear();
    for (const R of rooms.values()) {
      R.subscribed = false;
      R.subscribing = false;
      if (R.loadingOlder) R.loadingOlder = false; // asked on the old socket
    }
    ctx.ui.renderOlder();
    // Beyond the limit they are marked (subscribe): not live until shown.
    const order = subscriptionOrder([...roomNames, ...rooms.keys()], cur === G ? null : cur.room, Infinity);
    for (const r of order) subscribe(ensureRoom(r));
  }

  function onFrame(f) {
    if (f.type === 'welcome') { deps.count('welcomes'); onWelcome(f); return; }
    if (f.type === 'error' && f.code === 'too_many_rooms') { onTooManyRooms(f); return; }
    if (f.type === 'unsubscribed') {
      const n = unsubs.get(f.room) || 0;
      if (n > 1) unsubs.set(f.room, n - 1); else unsubs.delete(f.room);
      const R = rooms.get(f.room);
      if (!n && R) { R.subscribed = false; R.subscribing = false; } // not asked for: the server's word
      return;
    }
    const R = f.room ? rooms.get(f.room) : (cur === G ? null : cur);
    if (!R) return; // a room left: what was on the way before `unsubscribed`
    if (f.type === 'subscribed') {
      R.subscribed = true;
      R.resumed = !!f.resumed;
      if (pendingSubs.includes(R.room)) pendingSubs.splice(pendingSubs.indexOf(R.room), 1);
      return;
    }
    if (f.type === 'read') { onRead(R, f); return; }
    P.handleFrame(R === cur ? ctx : { S: R, ui: headless, timers: realTimers, saveOutbox }, f);
    if (noteActivity(R)) renderRooms();
    if (R === cur) scheduleRead();
  }

  // ---------- unread counts and read positions ----------

  // A new live message from someone else (any room).
  function onIncoming(m) {
    const R = rooms.get(m.room) || cur;
    deps.notify(m, R.room);
    if (R === G) return;
    countIncoming(R, m, G.me);
    if (R !== cur) roomList.rose(R.room, R.counts);
    renderRooms();
    if (R === cur) scheduleRead();
  }

  // The server moved the read position (this tab or another session of the user).
  function onRead(R, f) {
    if (f.cursor) R.readCursor = f.cursor;
    R.counts = { unread: Number(f.unread) || 0, mentions: Number(f.mentions) || 0 };
    renderRooms();
  }

  let readTimer = null;
  function scheduleRead() {
    if (readTimer) return;
    readTimer = setTimeout(() => { readTimer = null; markRead(); }, READ_DEBOUNCE_MS);
  }

  // The newest message on screen is read: forward only, sent to the server
  // (which tells every session of the user the new counts); counted here too
  // from the buffer, so a server without `read` still clears the badge.
  function markRead() {
    if (cur === G || !G.me) return;
    const cursor = newestVisibleCursor();
    if (!readMovesForward(cur, cursor)) return;
    cur.readCursor = cursor;
    if (G.serverReads && cur.subscribing) cur.conn.send({ type: 'read', cursor });
    const c = countsAfter(cur, cursor, G.me);
    if (c) { cur.counts = c; renderRooms(); }
  }

  // The room list with counts (GET /api/rooms), or, from an older server (404)
  // or when it fails, the rooms this browser remembers.
  async function loadRooms() {
    let list = null;
    try { list = await api.rooms(); } catch { list = null; }
    if (!G.me) return;
    G.serverReads = !!list;
    const left = new Set(leftRooms());
    const names = [];
    for (const r of list || []) {
      if (!r || !ROOM_RE.test(r.room) || left.has(r.room)) continue;
      const R = ensureRoom(r.room);
      R.counts = { unread: Number(r.unread) || 0, mentions: Number(r.mentions) || 0 };
      // The server's position (a local one may have moved before the list came,
      // without a `read` frame: the next check sends it).
      R.readCursor = r.read_cursor || null;
      names.push(r.room);
    }
    for (const r of recentRooms()) if (!left.has(r)) names.push(r);
    for (const o of G.outbox.values()) if (o.user === G.me && ROOM_RE.test(o.room) && !left.has(o.room)) names.push(o.room);
    const shown = cur === G ? [] : [cur.room];
    roomNames = [...new Set([...shown, ...roomNames, ...names])];
    for (const r of roomNames) ensureRoom(r);
    renderRooms();
    scheduleRead();
    deps.count('roomLists'); // a marker for tests: the list is loaded
  }

  // Draw the shown room from its buffer.
  function renderShown() {
    const ui = ctx.ui;
    ui.clearMessages();
    ui.renderAll(cur.order.map((id) => cur.msgs.get(id)).filter(Boolean), cur.markerAt, cur.sys);
    for (const id of cur.order) {
      const e = cur.msgs.get(id);
      if (!e || e.own) continue;
      if (G.ackedSeen.has(id)) ui.seenSent(id);
      else ui.observeSeen(id);
    }
    ui.renderOlder();
    ui.renderTyping();
    if (G.conn && G.conn.state === 'online' && cur.subscribed) ui.renderPresence(cur.presence, cur.presence.length);
    else { $('people-list').replaceChildren(); $('people-count').textContent = ''; }
    if (!cur.scroll || cur.scroll.bottom) scrollToBottom();
    else $('scroller').scrollTop = cur.scroll.top;
    if (isAtBottom() && document.visibilityState === 'visible') ui.clearUnread();
    ui.syncJump();
  }

  /** Show `room`: instant, from its buffer; the socket stays. */
  function showRoom(room, { replaceHash = false } = {}) {
    if (!ROOM_RE.test(room)) return;
    setLeft(room, false); // shown again (joined, picked, linked): no longer left
    const R = ensureRoom(room);
    if (cur !== R) {
      if (cur !== G) cur.scroll = { top: $('scroller').scrollTop, bottom: isAtBottom() };
      deps.leaveRoom(); // the composer's typing, private mode
      cur = R;
      renderShown();
    }
    R.shownAt = Date.now();
    if (R.overLimit && G.conn && G.conn.state === 'online') subscribe(R);
    sessionStorage.setItem('hubbub.room', room);
    const hash = `#${room}`;
    if (location.hash !== hash) {
      if (replaceHash) history.replaceState(null, '', hash);
      else history.pushState(null, '', hash);
    }
    $('room-title').textContent = `#${room}`;
    deps.roomShown(room);
    rememberRoom(room);
    if (!G.conn) connect();
    scheduleRead();
  }

  /**
   * Leave `room`: unsubscribed on the socket, out of the list, the recent
   * rooms and the outbox, remembered as left (per user, in this browser) so
   * GET /api/rooms does not bring it back; joining it again undoes that.
   * The shown room gives way to the top of the list. Returns the room shown
   * now, or null (not a room of the list, or the only one).
   */
  function leave(room) {
    const R = rooms.get(room);
    const rest = roomNames.filter((r) => r !== room);
    if (!R || !rest.length) return null;
    if (R.subscribing && G.conn && G.conn.open) unsubscribe(room);
    if (G.conn) G.conn.forgetRoom(room); // receipts still batched for it
    if (pendingSubs.includes(room)) pendingSubs.splice(pendingSubs.indexOf(room), 1);
    rooms.delete(room);
    roomNames = rest;
    setLeft(room, true);
    storeSet(localStorage, RECENT_ROOMS, recentRooms().filter((r) => r !== room));
    let dropped = false;
    for (const o of [...G.outbox.values()]) if (o.room === room) { G.outbox.delete(o.id); dropped = true; }
    if (dropped) saveOutbox();
    if (R === cur) showRoom(rest[0], { replaceHash: true }); // renders the list
    else renderRooms();
    return cur.room;
  }

  function connect() {
    G.conn = new Connection({
      multi: true,
      clientId: G.clientId,
      since: () => (cur === G ? null : cur.lastCursor),
      probeRoom: () => (cur !== G && cur.subscribed ? cur.room : null),
      onFrame,
      onState: deps.onConnState,
      onTooBig: (frame, bytes) => P.onTooBig(ctxOfFrame(frame), frame, bytes),
      onSuspect: (frame, bytes) => P.onSuspect(ctxOfFrame(frame), frame, bytes),
      ...deps.connOptions(),
    });
    G.conn.connect();
  }

  function ctxOfFrame(frame) {
    const R = frame && frame.room ? rooms.get(frame.room) : null;
    return !R || R === cur ? ctx : { S: R, ui: headless, timers: realTimers, saveOutbox };
  }

  /** Signed out: every room forgotten, the socket closed. */
  function reset() {
    if (G.conn) { G.conn.stop(); G.conn = null; }
    clearTimeout(readTimer);
    readTimer = null;
    cur = G;
    rooms.clear();
    roomNames = [];
    roomList.clear();
    G.titleCount = 0;
    G.roomLimit = 0;
    pendingSubs.length = 0;
    unsubs.clear();
  }

  /** The socket is gone: no subscription holds, typing can't be kept fresh. */
  function disconnected() {
    pendingSubs.length = 0;
    unsubs.clear();
    for (const R of rooms.values()) { R.typers.clear(); R.subscribed = false; R.subscribing = false; }
  }

  return {
    S, ctx, showRoom, loadRooms, onIncoming, scheduleRead, reset, disconnected,
    renderRooms, leave,
    /** The first room this browser remembers that the user did not leave (null: none). */
    firstRemembered: () => recentRooms().find((r) => !leftRooms().includes(r)) || null,
    shown: () => (cur === G ? null : cur.room),
  };
}
