// The room list's pure logic (no DOM): per-room state on one multi-room
// socket, the badge text and the accessible name of a room's button, the
// local unread count after a read move, and which rooms a new socket
// subscribes to. Node imports it in the unit tests.

import { mentionsUser } from './format.js';

export const UNREAD_CAP = 100;       // the server's cap: 100 means "100 or more"
export const MAX_ROOMS = 100;        // the server's default rooms per connection

// The fields every room keeps for itself; the rest (me, the outbox, acked
// ids, the tab's hidden count…) is the page's and is shared through accessors.
export const PER_ROOM_KEYS = [
  'msgs', 'order', 'lastCursor', 'oldestCursor', 'moreOlder', 'loadingOlder', 'olderReq',
  'newerTrimmed', 'typers', 'presence', 'visibleUnseen', 'unread', 'marker', 'markerAt',
  'joinedOnce', 'resumed', 'caughtUp',
];

/**
 * A room's state: the per-room fields of state.js's createState, its own
 * `room`, the badge (`counts`), the read position and the subscription;
 * every other field reads and writes the page's state `G`.
 */
export function roomState(G, room) {
  const R = {
    room,
    msgs: new Map(), order: [], lastCursor: null, oldestCursor: null, moreOlder: false,
    loadingOlder: false, olderReq: 0, newerTrimmed: false, typers: new Map(), presence: [],
    visibleUnseen: new Set(), unread: 0, marker: false, markerAt: null, joinedOnce: false,
    resumed: false, caughtUp: 0,
    counts: { unread: 0, mentions: 0 }, // the badge (server counts, kept live)
    readCursor: null,                   // the read position as far as we know
    subscribed: false,
    scroll: null,                       // {top, bottom} when it was last shown
  };
  for (const k of Object.keys(G)) {
    if (k in R || k === 'conn') continue;
    Object.defineProperty(R, k, {
      get: () => G[k], set: (v) => { G[k] = v; }, enumerable: false,
    });
  }
  return R;
}

/** "99+" from 100 on (the server's cap), '' for none. */
export function badgeText(n) {
  if (!n || n < 0) return '';
  return n >= UNREAD_CAP ? '99+' : String(n);
}

/** The button's accessible name: "#general, 3 unread, 1 mention". */
export function roomLabel(room, counts = {}) {
  const parts = [`#${room}`];
  const u = counts.unread || 0; const m = counts.mentions || 0;
  if (u) parts.push(`${u >= UNREAD_CAP ? 'more than 99' : u} unread`);
  if (m) parts.push(`${m >= UNREAD_CAP ? 'more than 99' : m} ${m === 1 ? 'mention' : 'mentions'}`);
  return parts.join(', ');
}

/**
 * The counts after the read position moved to `cursor`, from the messages
 * this page holds for the room: others' messages after it (mentions of `me`
 * among them). null when `cursor` is not among them (the page cannot
 * tell: the server's `read` frame will).
 */
export function countsAfter(R, cursor, me) {
  const i = R.order.findIndex((id) => { const e = R.msgs.get(id); return e && e.m.cursor === cursor; });
  if (i < 0) return null;
  let unread = 0; let mentions = 0;
  for (const id of R.order.slice(i + 1)) {
    const e = R.msgs.get(id);
    if (!e || e.own || !e.m.cursor) continue;
    unread += 1;
    if (mentionsUser(e.m, me)) mentions += 1;
  }
  return { unread: Math.min(unread, UNREAD_CAP), mentions: Math.min(mentions, UNREAD_CAP) };
}

/** Whether `cursor` is after the room's read position (unknown order: yes; the server keeps it monotonic). */
export function readMovesForward(R, cursor) {
  if (!cursor || cursor === R.readCursor) return false;
  if (!R.readCursor) return true;
  const at = (c) => R.order.findIndex((id) => { const e = R.msgs.get(id); return e && e.m.cursor === c; });
  const from = at(R.readCursor);
  if (from < 0) return true;
  return at(cursor) > from;
}

/** A new live message from someone else raises the badge (capped). */
export function countIncoming(R, m, me) {
  R.counts.unread = Math.min(UNREAD_CAP, (R.counts.unread || 0) + 1);
  if (m.type !== 'private' && mentionsUser(m, me)) R.counts.mentions = Math.min(UNREAD_CAP, (R.counts.mentions || 0) + 1);
}

/** The rooms a new socket subscribes to: the shown one first, then the list's order, at most `max`. */
export function subscriptionOrder(rooms, shown, max = MAX_ROOMS) {
  const out = shown ? [shown] : [];
  for (const r of rooms) if (!out.includes(r)) out.push(r);
  return out.slice(0, Math.max(1, max));
}

/** The total for the tab title (capped rooms count as 100). */
export function totalUnread(rooms) {
  let n = 0;
  for (const R of rooms) n += R.counts.unread || 0;
  return n;
}
