// The room list's pure logic (no DOM): per-room state on one multi-room
// socket, the badge text and the accessible name of a room's button, the
// local unread count after a read move, and which rooms a new socket
// subscribes to. Node imports it in the unit tests.

import { mentionsUser } from './format.js';

export const UNREAD_CAP = 100;       // the server's cap: 100 means "100 or more"
export const MAX_ROOMS = 100;        // the server's default rooms per connection
export const MAX_LEFT = 200;         // rooms left remembered per user (localStorage)

// The fields every room keeps for itself; the rest (me, the outbox, acked
// ids, the tab's hidden count…) is the page's and is shared through accessors.
export const PER_ROOM_KEYS = [
  'msgs', 'order', 'lastCursor', 'oldestCursor', 'moreOlder', 'loadingOlder', 'olderReq',
  'newerTrimmed', 'typers', 'presence', 'visibleUnseen', 'unread', 'marker', 'markerAt', 'sys',
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
    visibleUnseen: new Set(), unread: 0, marker: false, markerAt: null, sys: [], joinedOnce: false,
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

/**
 * A room's buffer in display order: its messages with its system lines
 * (`{text, kind, after}`) each right after the message it followed when it
 * came; a line that came before any message, or whose message is no longer
 * in the buffer (trimmed or removed), goes on top. Returns
 * `[{entry} | {line}]`.
 */
export function withSystemLines(entries, sys = []) {
  const ids = new Set(entries.map((e) => e.id));
  const after = new Map(); // message id -> its lines
  const top = [];
  for (const line of sys) {
    if (line.after === null || !ids.has(line.after)) { top.push({ line }); continue; }
    if (!after.has(line.after)) after.set(line.after, []);
    after.get(line.after).push({ line });
  }
  const out = top;
  for (const entry of entries) {
    out.push({ entry });
    for (const l of after.get(entry.id) || []) out.push(l);
  }
  return out;
}

/**
 * The room's activity: the time of the newest message it has shown (its own
 * pending ones included, as the server counts the user's own messages).
 * Only moves forward; true when it moved.
 */
export function noteActivity(R) {
  const last = R.order.length ? R.msgs.get(R.order[R.order.length - 1]) : null;
  const t = last ? Date.parse(last.m.ts) : NaN;
  if (!Number.isFinite(t) || t <= (R.activity || 0)) return false;
  R.activity = t;
  return true;
}

/**
 * The room list's order: newest activity first (as `GET /api/rooms`); rooms
 * with none yet keep their order after them (stable).
 */
export function byActivity(names, activityOf) {
  const at = new Map(names.map((r, i) => [r, i]));
  return names.slice().sort((a, b) => ((activityOf(b) || 0) - (activityOf(a) || 0)) || (at.get(a) - at.get(b)));
}

/**
 * The order to draw while the user is in the list (focus or pointer on it):
 * the rooms already there keep their places, rooms that went are dropped,
 * new ones go at the end; the real order is drawn once they leave it.
 */
export function keepPlaces(shown, wanted) {
  const want = new Set(wanted);
  const kept = shown.filter((r) => want.has(r));
  const have = new Set(kept);
  return [...kept, ...wanted.filter((r) => !have.has(r))];
}

/** The rooms left in this browser, without `room` (joined again) or with it (left). */
export function leftAfter(left, room, isLeft) {
  const rest = left.filter((r) => r !== room);
  return isLeft ? [room, ...rest].slice(0, MAX_LEFT) : rest;
}
