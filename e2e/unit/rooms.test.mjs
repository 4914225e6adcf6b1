// web/js/rooms.js (the room list's counts, read positions, subscriptions,
// order by activity, rooms left, system lines per room) and conn.js on a
// multi-room socket (one URL for all rooms, receipts per room).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  roomState, badgeText, roomLabel, countsAfter, readMovesForward, countIncoming,
  subscriptionOrder, totalUnread, withSystemLines, noteActivity, byActivity, keepPlaces, leftAfter, MAX_LEFT,
} from '../../web/js/rooms.js';
import * as P from '../../web/js/protocol.js';
import { createState } from '../../web/js/state.js';
import { Connection } from '../../web/js/conn.js';
import { FakeClock, fakeSockets, fakeEnv, settle, recordingUi } from './fakes.mjs';

function withMessages(R, list) {
  for (const [id, sender, cursor, content = 'x'] of list) {
    R.msgs.set(id, { id, own: sender === R.me, m: { id, sender, cursor, content, type: 'chat' } });
    R.order.push(id);
  }
  return R;
}

test('badges: a count, "99+" from the server cap of 100, nothing for none', () => {
  assert.equal(badgeText(0), '');
  assert.equal(badgeText(undefined), '');
  assert.equal(badgeText(3), '3');
  assert.equal(badgeText(99), '99');
  assert.equal(badgeText(100), '99+');
  assert.equal(badgeText(250), '99+');
});

test('the room button names the counts in words', () => {
  assert.equal(roomLabel('general'), '#general');
  assert.equal(roomLabel('general', { unread: 0, mentions: 0 }), '#general');
  assert.equal(roomLabel('general', { unread: 3, mentions: 1 }), '#general, 3 unread, 1 mention');
  assert.equal(roomLabel('dev', { unread: 5, mentions: 2 }), '#dev, 5 unread, 2 mentions');
  assert.equal(roomLabel('dev', { unread: 100, mentions: 0 }), '#dev, more than 99 unread');
});

test('a room state keeps its own buffer and shares the page\'s fields', () => {
  const G = createState();
  G.me = 'alice';
  const a = roomState(G, 'a');
  const b = roomState(G, 'b');
  a.order.push('m1');
  a.lastCursor = 'c1';
  assert.deepEqual(b.order, []);
  assert.equal(b.lastCursor, null);
  assert.equal(a.me, 'alice');
  a.hiddenUnread += 2; // the page's count, whichever room it came from
  b.hiddenUnread += 1;
  assert.equal(G.hiddenUnread, 3);
  assert.equal(a.outbox, G.outbox);
  assert.equal(a.room, 'a');
  assert.equal(G.room, null);
});

test('counts after a read move: others\' messages after the cursor, mentions among them; unknown cursor: null', () => {
  const G = createState();
  G.me = 'alice';
  const R = withMessages(roomState(G, 'r'), [
    ['1', 'bob', 'c1'], ['2', 'alice', 'c2'], ['3', 'bob', 'c3', 'hey @alice'], ['4', 'carol', 'c4'],
    ['5', 'alice', null], // pending: not counted
  ]);
  assert.deepEqual(countsAfter(R, 'c1', 'alice'), { unread: 2, mentions: 1 });
  assert.deepEqual(countsAfter(R, 'c3', 'alice'), { unread: 1, mentions: 0 });
  assert.deepEqual(countsAfter(R, 'c4', 'alice'), { unread: 0, mentions: 0 });
  assert.equal(countsAfter(R, 'c0', 'alice'), null);
});

test('the read position only moves forward', () => {
  const G = createState();
  const R = withMessages(roomState(G, 'r'), [['1', 'bob', 'c1'], ['2', 'bob', 'c2'], ['3', 'bob', 'c3']]);
  assert.equal(readMovesForward(R, null), false);
  assert.equal(readMovesForward(R, 'c2'), true); // nothing read yet
  R.readCursor = 'c2';
  assert.equal(readMovesForward(R, 'c2'), false);
  assert.equal(readMovesForward(R, 'c1'), false);
  assert.equal(readMovesForward(R, 'c3'), true);
  R.readCursor = 'c-older-than-the-buffer'; // the server keeps it monotonic
  assert.equal(readMovesForward(R, 'c1'), true);
});

test('a new message raises the badge, a mention of me the mention count, both capped at 100', () => {
  const G = createState();
  const R = roomState(G, 'r');
  countIncoming(R, { sender: 'bob', content: 'hi', type: 'chat' }, 'alice');
  countIncoming(R, { sender: 'bob', content: 'hi @alice', type: 'chat' }, 'alice');
  countIncoming(R, { sender: 'bob', content: 'x', type: 'chat', mentions: ['alice'] }, 'alice');
  countIncoming(R, { sender: 'bob', content: '@alice', type: 'private', target: 'alice' }, 'alice');
  assert.deepEqual(R.counts, { unread: 4, mentions: 2 });
  R.counts = { unread: 99, mentions: 100 };
  countIncoming(R, { sender: 'bob', content: '@alice', type: 'chat' }, 'alice');
  countIncoming(R, { sender: 'bob', content: '@alice', type: 'chat' }, 'alice');
  assert.deepEqual(R.counts, { unread: 100, mentions: 100 });
  const S2 = roomState(G, 's');
  S2.counts.unread = 7;
  assert.equal(totalUnread([R, S2]), 107);
});

test('subscriptions: the shown room first, then the list, at most the limit', () => {
  assert.deepEqual(subscriptionOrder(['a', 'b', 'c'], 'b'), ['b', 'a', 'c']);
  assert.deepEqual(subscriptionOrder(['a', 'b', 'a'], null), ['a', 'b']);
  assert.deepEqual(subscriptionOrder(['a', 'b', 'c', 'd'], 'd', 2), ['d', 'a']);
});

function multi() {
  const clock = new FakeClock();
  const { FakeWebSocket, all } = fakeSockets();
  const conn = new Connection({
    multi: true,
    clientId: 'web-1',
    since: () => 'c-9',
    probeRoom: () => 'shown',
    onFrame: () => {},
    onState: () => {},
    refreshAuth: async () => 'ok',
    WebSocket: FakeWebSocket,
    timers: clock.timers,
    env: fakeEnv(),
    silenceMs: 1000,
    probeMs: 1000,
  });
  return { clock, conn, all };
}

test('a multi-room socket: multi=1, no room, no since (each subscription has its own)', () => {
  const t = multi();
  t.conn.connect();
  const u = t.all[0].url;
  assert.equal(u.searchParams.get('multi'), '1');
  assert.equal(u.searchParams.get('room'), null);
  assert.equal(u.searchParams.get('since'), null);
  assert.equal(u.searchParams.get('batch'), '1');
  t.conn.stop();
});

test('a multi-room socket batches receipts per room, each ack naming its room', async () => {
  const t = multi();
  t.conn.connect();
  t.all[0].welcome();
  t.conn.ack('x1', 'delivered', 'a');
  t.conn.ack('y1', 'delivered', 'b');
  t.conn.ack('x2', 'delivered', 'a');
  t.conn.ack('x3', 'seen', 'a');
  await t.clock.advance(300);
  const acks = t.all[0].sent.filter((f) => f.type === 'ack');
  assert.deepEqual(acks.map((f) => [f.room, f.status, f.ids]).sort(), [
    ['a', 'delivered', ['x1', 'x2']], ['a', 'seen', ['x3']], ['b', 'delivered', ['y1']],
  ]);
  t.conn.stop();
});

test('the watchdog\'s probe on a multi-room socket names the shown room', async () => {
  const t = multi();
  t.conn.connect();
  t.all[0].welcome();
  await t.clock.advance(1500);
  const probe = t.all[0].sent.find((f) => f.req === 'probe');
  assert.deepEqual(probe, { type: 'history', limit: 1, req: 'probe', after: 'c-9', room: 'shown' });
  t.conn.stop();
});

test('per-room receipts still queued when a multi-room socket closes go out on the next one, with their room', async () => {
  const t = multi();
  t.conn.connect();
  // A tight bucket, so the batched acks wait in the queue behind a chat frame.
  t.all[0].welcome({ limits: { max_frame: 8192, msgs_per_sec: 1, burst: 3 } });
  t.conn.send({ type: 'chat', room: 'a', id: 'm1', content: 'hi' });
  t.conn.ack('x1', 'delivered', 'a');
  t.conn.ack('y1', 'delivered', 'b');
  await t.clock.advance(300);
  assert.ok(t.conn.queue.some((f) => f.type === 'ack'));
  t.all[0].serverClose(1006);
  await settle();
  await t.clock.advance(40_000);
  t.all[1].welcome();
  await t.clock.advance(1000);
  const acks = t.all[1].sent.filter((f) => f.type === 'ack');
  assert.deepEqual(acks.map((f) => [f.room, f.ids]).sort(), [['a', ['x1']], ['b', ['y1']]]);
  t.conn.stop();
});

test('a room leaving a multi-room socket: its batched receipts go, the other rooms\' stay', async () => {
  const t = multi();
  t.conn.connect();
  t.all[0].welcome();
  t.conn.ack('x1', 'delivered', 'a');
  t.conn.ack('x2', 'seen', 'a');
  t.conn.ack('y1', 'delivered', 'b');
  t.conn.forgetRoom('a');
  await t.clock.advance(300);
  const acks = t.all[0].sent.filter((f) => f.type === 'ack');
  assert.deepEqual(acks.map((f) => [f.room, f.status, f.ids]), [['b', 'delivered', ['y1']]]);
  t.conn.stop();
});

// ---------- system lines per room ----------

test('system lines go to their room\'s state, after the message that was newest, and are drawn only by its ui', () => {
  const G = createState();
  G.me = 'alice';
  const A = roomState(G, 'a');
  const B = roomState(G, 'b');
  const uiA = recordingUi();
  const uiB = recordingUi();
  const ctxA = { S: A, ui: uiA, timers: null, saveOutbox: () => {} };
  const ctxB = { S: B, ui: uiB, timers: null, saveOutbox: () => {} };
  P.handleFrame(ctxA, { type: 'system', room: 'a', content: 'bob joined' });
  P.handleFrame(ctxA, { type: 'chat', id: 'm1', room: 'a', sender: 'bob', content: 'hi', ts: '2026-01-01T10:00:00Z', cursor: 'c1' });
  P.handleFrame(ctxA, { type: 'system', room: 'a', content: 'carol joined' });
  assert.deepEqual(A.sys, [
    { text: 'bob joined', kind: 'system', after: null },
    { text: 'carol joined', kind: 'system', after: 'm1' },
  ]);
  assert.deepEqual(B.sys, [], 'not in the other room');
  assert.deepEqual(G.sys, [], 'not the page\'s');
  assert.equal(uiA.calls.systemLine.length, 2);
  assert.equal(uiB.calls.systemLine, undefined);
  P.handleFrame(ctxB, { type: 'error', code: 'not_subscribed', message: 'nope' });
  assert.deepEqual(B.sys.map((l) => [l.text, l.kind]), [['nope', 'error']]);
  // Emptying the view empties them too (a gap restarts the room's view).
  P.clearView(ctxA);
  assert.deepEqual(A.sys, []);
});

test('system lines are capped per room (the oldest go)', () => {
  const G = createState();
  const A = roomState(G, 'a');
  const ctx = { S: A, ui: recordingUi(), timers: null, saveOutbox: () => {} };
  for (let i = 0; i < P.MAX_SYSTEM_LINES + 5; i += 1) P.systemLine(ctx, `line ${i}`);
  assert.equal(A.sys.length, P.MAX_SYSTEM_LINES);
  assert.equal(A.sys[0].text, 'line 5');
});

test('a room\'s buffer with its system lines: each after its message, the rest on top', () => {
  const e = (id) => ({ id });
  const sys = [
    { text: 'first', after: null },
    { text: 'after m1', after: 'm1' },
    { text: 'after m1 too', after: 'm1' },
    { text: 'after a trimmed one', after: 'gone' },
    { text: 'after m2', after: 'm2' },
  ];
  const out = withSystemLines([e('m1'), e('m2')], sys).map((x) => (x.entry ? x.entry.id : x.line.text));
  assert.deepEqual(out, ['first', 'after a trimmed one', 'm1', 'after m1', 'after m1 too', 'm2', 'after m2']);
  assert.deepEqual(withSystemLines([e('m1')]).map((x) => x.entry.id), ['m1']);
});

// ---------- order by activity ----------

test('a room\'s activity is its newest message\'s time, forward only', () => {
  const R = roomState(createState(), 'a');
  assert.equal(noteActivity(R), false, 'no messages');
  const add = (id, ts) => { R.msgs.set(id, { id, m: { id, ts } }); R.order.push(id); };
  add('m1', '2026-01-01T10:00:00Z');
  assert.equal(noteActivity(R), true);
  assert.equal(R.activity, Date.parse('2026-01-01T10:00:00Z'));
  assert.equal(noteActivity(R), false, 'unchanged');
  R.order.unshift('old'); R.msgs.set('old', { id: 'old', m: { ts: '2025-01-01T00:00:00Z' } }); // an older page
  assert.equal(noteActivity(R), false);
  add('m2', 'not a date');
  assert.equal(noteActivity(R), false);
  add('m2b', '2026-01-01T09:00:00Z'); // newest in the buffer, older than what was seen (paged back)
  assert.equal(noteActivity(R), false);
  assert.equal(R.activity, Date.parse('2026-01-01T10:00:00Z'), 'never backwards');
  add('m3', '2026-01-01T11:00:00Z');
  assert.equal(noteActivity(R), true);
  assert.equal(R.activity, Date.parse('2026-01-01T11:00:00Z'));
});

test('the list\'s order: newest activity first, rooms without any after, in their order', () => {
  const act = { a: 10, b: 30, c: 20 };
  assert.deepEqual(byActivity(['a', 'x', 'b', 'y', 'c'], (r) => act[r]), ['b', 'c', 'a', 'x', 'y']);
  assert.deepEqual(byActivity(['y', 'x'], () => undefined), ['y', 'x']);
  const tie = { p: 5, q: 5 };
  assert.deepEqual(byActivity(['q', 'p'], (r) => tie[r]), ['q', 'p'], 'stable');
});

test('while the user is in the list the rooms keep their places: gone ones drop, new ones at the end', () => {
  assert.deepEqual(keepPlaces(['a', 'b', 'c'], ['c', 'a', 'b']), ['a', 'b', 'c']);
  assert.deepEqual(keepPlaces(['a', 'b', 'c'], ['d', 'c', 'a']), ['a', 'c', 'd']);
  assert.deepEqual(keepPlaces([], ['b', 'a']), ['b', 'a']);
});

test('rooms left: added once, on top, capped; joined again: removed', () => {
  assert.deepEqual(leftAfter([], 'a', true), ['a']);
  assert.deepEqual(leftAfter(['b', 'a'], 'a', true), ['a', 'b']);
  assert.deepEqual(leftAfter(['b', 'a'], 'a', false), ['b']);
  assert.deepEqual(leftAfter(['b'], 'a', false), ['b']);
  const many = Array.from({ length: MAX_LEFT }, (_, i) => `r${i}`);
  assert.equal(leftAfter(many, 'new', true).length, MAX_LEFT);
  assert.equal(leftAfter(many, 'new', true)[0], 'new');
});
