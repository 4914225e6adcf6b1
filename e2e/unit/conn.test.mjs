// web/js/conn.js driven by a fake socket and a fake clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Connection, CLOSE, backoffDelay } from '../../web/js/conn.js';
import { FakeClock, fakeSockets, fakeEnv, settle } from './fakes.mjs';

function setup(over = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, all } = fakeSockets();
  const frames = [];
  const states = [];
  const tooBig = [];
  const suspects = [];
  const refreshes = [];
  let cursor = null;
  const conn = new Connection({
    room: 'r',
    clientId: 'web-1',
    since: () => cursor,
    onFrame: (f) => frames.push(f),
    onState: (s, info) => states.push([s, info]),
    onTooBig: (frame, bytes) => tooBig.push([frame, bytes]),
    onSuspect: (frame, bytes) => suspects.push([frame, bytes]),
    refreshAuth: async (force) => { refreshes.push(force); return 'ok'; },
    WebSocket: FakeWebSocket,
    timers: clock.timers,
    env: fakeEnv(),
    ...over,
  });
  return { clock, conn, all, frames, states, tooBig, suspects, refreshes, setCursor: (c) => { cursor = c; } };
}

test('connects to /ws with room, client and since; online after welcome', () => {
  const t = setup();
  t.setCursor('c-42');
  t.conn.connect();
  assert.equal(t.all.length, 1);
  const u = t.all[0].url;
  assert.equal(u.pathname, '/ws');
  assert.equal(u.searchParams.get('room'), 'r');
  assert.equal(u.searchParams.get('client'), 'web-1');
  assert.equal(u.searchParams.get('since'), 'c-42');
  assert.equal(u.searchParams.get('batch'), '1');
  assert.equal(t.states.at(-1)[0], 'connecting');
  t.all[0].welcome();
  assert.equal(t.conn.state, 'online');
  assert.equal(t.conn.open, true);
  assert.equal(t.frames[0].type, 'welcome');
  t.conn.stop();
});

test('acks queued when the socket closes are sent on the next socket', async () => {
  const t = setup();
  t.conn.connect();
  // A tight bucket, so the batched ack waits in the queue behind a chat frame.
  t.all[0].welcome({ limits: { max_frame: 8192, msgs_per_sec: 1, burst: 3 } });
  t.conn.send({ type: 'chat', id: 'm1', content: 'hi' });
  assert.equal(t.all[0].sent.length, 1);
  t.conn.ack('x1', 'delivered');
  t.conn.ack('x2', 'seen');
  await t.clock.advance(300); // the ack flush: queued, no token yet
  assert.equal(t.all[0].sent.length, 1, 'still waiting for a token');
  assert.ok(t.conn.queue.some((f) => f.type === 'ack'));
  t.all[0].serverClose(1006);
  await settle();
  await t.clock.advance(40_000); // the retry
  assert.equal(t.all.length, 2);
  t.all[1].welcome();
  await t.clock.advance(1000);
  const acks = t.all[1].sent.filter((f) => f.type === 'ack');
  assert.deepEqual(acks.map((f) => [f.status, f.ids]).sort(), [['delivered', ['x1']], ['seen', ['x2']]]);
  t.conn.stop();
});

test('a frame over max_frame BYTES is refused and reported, never sent', () => {
  const t = setup();
  t.conn.connect();
  t.all[0].welcome();
  const big = { type: 'chat', id: 'big', content: '漢'.repeat(2800) }; // 2 800 chars, 8 400+ bytes
  t.conn.send(big);
  assert.equal(t.all[0].sent.length, 0, 'not on the wire');
  assert.equal(t.tooBig.length, 1);
  assert.equal(t.tooBig[0][0].id, 'big');
  assert.ok(t.tooBig[0][1] > 8192, `bytes: ${t.tooBig[0][1]}`);
  t.conn.send({ type: 'chat', id: 'small', content: '漢'.repeat(100) });
  assert.equal(t.all[0].sent.length, 1, 'the next frame still goes out');
  t.conn.stop();
});

test('a 1009 close reports the biggest message the socket carried, then reconnects', async () => {
  const t = setup();
  t.conn.connect();
  // The server's limit is smaller than what the client was told (say, a
  // restart with a new flag): the frame goes out and the server closes 1009.
  t.all[0].welcome();
  t.conn.send({ type: 'chat', id: 'a', content: 'x'.repeat(10) });
  t.conn.send({ type: 'chat', id: 'b', content: 'y'.repeat(5000) });
  t.conn.send({ type: 'ack', ids: ['z'], status: 'delivered' });
  t.all[0].serverClose(CLOSE.TOO_BIG);
  await settle();
  assert.equal(t.tooBig.length, 1);
  assert.equal(t.tooBig[0][0].id, 'b');
  await t.clock.advance(40_000);
  assert.equal(t.all.length, 2, 'reconnects');
  t.conn.stop();
});

test('1006 (no close frame): the biggest unanswered message is reported as a suspect; answered ones never', async () => {
  const t = setup();
  t.conn.connect();
  t.all[0].welcome();
  t.conn.send({ type: 'chat', id: 'ok', content: 'x'.repeat(3000) });
  t.all[0].recv({ type: 'chat', id: 'ok', sender: 'ann', content: 'x'.repeat(3000) }); // the echo
  t.conn.send({ type: 'chat', id: 'sus', content: 'y'.repeat(2000) });
  t.conn.send({ type: 'chat', id: 'small', content: 'z' });
  t.all[0].serverClose(CLOSE.ABNORMAL);
  await settle();
  assert.deepEqual(t.suspects.map(([f]) => f.id), ['sus']);
  assert.equal(t.tooBig.length, 0);
  // A clean close reports nothing.
  await t.clock.advance(40_000);
  t.all[1].welcome();
  t.conn.send({ type: 'chat', id: 'later', content: 'q' });
  t.all[1].serverClose(CLOSE.GOING_AWAY);
  await settle();
  assert.equal(t.suspects.length, 1);
  t.conn.stop();
});

test('a 1008 close refreshes the token and reconnects at once with since', async () => {
  const t = setup();
  t.conn.connect();
  t.all[0].welcome();
  t.setCursor('c-7');
  t.all[0].serverClose(CLOSE.POLICY);
  await settle();
  assert.deepEqual(t.refreshes, [true]);
  assert.equal(t.all.length, 2, 'no backoff wait');
  assert.equal(t.all[1].url.searchParams.get('since'), 'c-7');
  t.conn.stop();
});

test('renew: a new socket with since; the old one closed once the new is welcomed; never "reconnecting"', async () => {
  const t = setup();
  t.conn.connect();
  t.all[0].welcome();
  t.setCursor('c-9');
  t.states.length = 0;
  t.conn.renew();
  assert.equal(t.all.length, 2);
  assert.equal(t.all[1].url.searchParams.get('since'), 'c-9');
  assert.equal(t.all[0].closedByClient, null, 'old socket open until the new one is welcomed');
  t.all[1].welcome();
  assert.equal(t.all[0].closedByClient, 1000);
  assert.deepEqual(t.states.map((s) => s[0]), ['connecting', 'online']);
  // A late close of the old socket changes nothing.
  t.all[0].serverClose(CLOSE.POLICY);
  await settle();
  assert.equal(t.conn.state, 'online');
  assert.equal(t.all.length, 2);
  t.conn.stop();
});

test('4001 (replaced) does not reconnect', async () => {
  const t = setup();
  t.conn.connect();
  t.all[0].welcome();
  t.all[0].serverClose(CLOSE.REPLACED);
  await settle();
  await t.clock.advance(60_000);
  assert.equal(t.conn.state, 'replaced');
  assert.equal(t.all.length, 1);
  t.conn.stop();
});

test('backoff grows, is capped at 30 s and never 0', () => {
  assert.equal(backoffDelay(0, () => 0), 250);
  assert.equal(backoffDelay(1, () => 1), 1000);
  assert.equal(backoffDelay(20, () => 1), 30_000);
  assert.equal(backoffDelay(20, () => 0), 15_000);
});

test('batch=1: a text frame of several lines is every frame in it, in order', () => {
  const t = setup();
  t.conn.connect();
  t.all[0].open();
  const hostile = 'a\nb\u2028c"}\n{';
  t.all[0].recvBatch([
    { type: 'welcome', user: 'ann', room: 'r', resumed: true,
      limits: { max_frame: 8192, max_content: 4000, msgs_per_sec: 10, burst: 20 } },
    { type: 'history', messages: [], more: false },
    { type: 'chat', id: 'm1', room: 'r', sender: 'bob', content: hostile },
    { type: 'presence', room: 'r', users: ['ann', 'bob'], count: 2 },
  ]);
  assert.deepEqual(t.frames.map((f) => f.type), ['welcome', 'history', 'chat', 'presence']);
  assert.equal(t.frames[2].content, hostile);
  assert.equal(t.conn.state, 'online');
  // A lone frame (the server's answer without batching) still works.
  t.all[0].recv({ type: 'system', room: 'r', content: 'hi' });
  assert.equal(t.frames.at(-1).type, 'system');
  t.conn.stop();
});
