// web/js/protocol.js: server frames -> state, with a recording `ui`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as P from '../../web/js/protocol.js';
import { createState } from '../../web/js/state.js';
import { Connection, CLOSE } from '../../web/js/conn.js';
import { FakeClock, fakeSockets, fakeEnv, recordingUi, recordingConn, settle } from './fakes.mjs';

function setup({ caps, ui } = {}) {
  const S = createState(caps);
  S.me = 'ann';
  S.room = 'r';
  S.conn = recordingConn();
  const clock = new FakeClock();
  const saves = [];
  const ctx = { S, ui: ui || recordingUi(), timers: clock.timers, saveOutbox: () => saves.push([...S.outbox.keys()]) };
  return { S, ctx, clock, saves };
}

let n = 0;
function msg(sender, extra = {}) {
  n += 1;
  return { type: 'chat', id: `m${n}`, room: 'r', sender, content: `text ${n}`, ts: '2026-01-01T00:00:00Z', cursor: `c${String(n).padStart(6, '0')}`, ...extra };
}

// ---------- frame size in bytes ----------

test('outgoing: 2 800 CJK characters are under 4000 characters but over max_frame bytes: refused with a clear message', () => {
  const { S } = setup();
  const r = P.outgoing(S, '漢'.repeat(2800), 'id-1', 'ts');
  assert.ok(r.error, 'refused');
  assert.match(r.error, /bytes/);
  assert.match(r.error, /8192/);
  assert.equal(r.o, undefined);
  // ASCII of the same length fits.
  const ok = P.outgoing(S, 'a'.repeat(2800), 'id-2', 'ts');
  assert.equal(ok.error, undefined);
  assert.equal(ok.o.id, 'id-2');
  assert.equal(ok.frame.content.length, 2800);
});

test('outgoing: the limit is the one the welcome announced', () => {
  const { S } = setup();
  S.conn.limits = { max_frame: 200, max_content: 4000 };
  assert.ok(P.outgoing(S, 'a'.repeat(180), 'id', 'ts').error);
  assert.equal(P.outgoing(S, 'a'.repeat(100), 'id', 'ts').error, undefined);
  assert.match(P.outgoing(S, 'a'.repeat(4001), 'id', 'ts').error, /4000 characters/);
});

test('outgoing: /msg becomes a tracked private; /ping is reply-only', () => {
  const { S } = setup();
  const pm = P.outgoing(S, '/msg bob hi there', 'id', 'ts');
  assert.equal(pm.o.kind, 'private');
  assert.equal(pm.o.target, 'bob');
  assert.equal(pm.o.display, 'hi there');
  const ping = P.outgoing(S, '/ping', 'id', 'ts');
  assert.equal(ping.o, undefined);
  assert.equal(ping.frame.content, '/ping');
});

test('1009: the message in flight fails and leaves the outbox; the next socket does not resend it', async () => {
  const { S, ctx } = setup();
  const clock = new FakeClock();
  ctx.timers = clock.timers;
  const { FakeWebSocket, all } = fakeSockets();
  S.conn = new Connection({
    room: 'r', clientId: 'web-1', since: () => S.lastCursor,
    onFrame: (f) => P.handleFrame(ctx, f), onState: () => {},
    onTooBig: (frame, bytes) => P.onTooBig(ctx, frame, bytes),
    refreshAuth: async () => 'ok',
    WebSocket: FakeWebSocket, timers: clock.timers, env: fakeEnv(),
  });
  S.conn.connect();
  all[0].welcome();
  all[0].recv({ type: 'history', messages: [], more: false });
  // The client thinks 8 KiB; this server closes at less (its flag changed).
  const r = P.outgoing(S, 'z'.repeat(3900), 'big-1', 'ts');
  P.sendOutbox(ctx, r.o);
  assert.ok(all[0].sent.some((f) => f.id === 'big-1'));
  all[0].serverClose(CLOSE.TOO_BIG);
  await settle();
  assert.equal(S.outbox.has('big-1'), false, 'dropped from the outbox');
  assert.equal(S.msgs.get('big-1').status, 'failed');
  assert.match(S.msgs.get('big-1').detail, /too long/);
  await clock.advance(40_000);
  assert.equal(all.length, 2);
  all[1].welcome();
  all[1].recv({ type: 'history', messages: [], more: false });
  await clock.advance(1000);
  assert.equal(all[1].sent.filter((f) => f.id === 'big-1').length, 0, 'not resent');
  S.conn.stop();
});

test('1006 each time the same message goes out: after 3 in a row it fails instead of looping', async () => {
  const { S, ctx } = setup();
  const clock = new FakeClock();
  ctx.timers = clock.timers;
  const { FakeWebSocket, all } = fakeSockets();
  S.conn = new Connection({
    room: 'r', clientId: 'web-1', since: () => S.lastCursor,
    onFrame: (f) => P.handleFrame(ctx, f), onState: () => {},
    onTooBig: (frame, bytes) => P.onTooBig(ctx, frame, bytes),
    onSuspect: (frame, bytes) => P.onSuspect(ctx, frame, bytes),
    refreshAuth: async () => 'ok',
    WebSocket: FakeWebSocket, timers: clock.timers, env: fakeEnv(),
  });
  S.conn.connect();
  all[0].welcome();
  all[0].recv({ type: 'history', messages: [], more: false });
  P.sendOutbox(ctx, P.outgoing(S, 'w'.repeat(3900), 'poison', 'ts').o);
  for (let i = 0; i < P.SUSPECT_STRIKES; i++) {
    const ws = all.at(-1);
    assert.ok(ws.sent.some((f) => f.id === 'poison'), `sent on socket ${i}`);
    assert.equal(S.msgs.get('poison').status, 'pending');
    ws.serverClose(CLOSE.ABNORMAL); // the server's 1009 lost to a reset
    await settle();
    await clock.advance(40_000);
    all.at(-1).welcome();
    all.at(-1).recv({ type: 'history', messages: [], more: false });
    await clock.advance(1000);
  }
  assert.equal(S.msgs.get('poison').status, 'failed');
  assert.match(S.msgs.get('poison').detail, /dropped each time/);
  assert.equal(S.outbox.has('poison'), false);
  assert.equal(all.at(-1).sent.filter((f) => f.id === 'poison').length, 0, 'not sent again');
  S.conn.stop();
});

test('a message the server answers is never a suspect, however often the network drops', () => {
  const { S, ctx } = setup();
  P.sendOutbox(ctx, P.outgoing(S, 'fine', 'fine-1', 'ts').o);
  P.onSuspect(ctx, { id: 'fine-1' }, 10);
  P.onSuspect(ctx, { id: 'fine-1' }, 10);
  P.handleFrame(ctx, { type: 'receipt', id: 'fine-1', status: 'saved' });
  P.onSuspect(ctx, { id: 'fine-1' }, 10);
  assert.equal(S.msgs.get('fine-1').status, 'saved');
  assert.equal(S.strikes.size, 0);
});

test('an outbox entry over the limit (persisted before) is not resent after a welcome: it fails', () => {
  const { S, ctx, saves } = setup();
  S.conn = recordingConn();
  const o = { id: 'old', user: 'ann', room: 'r', frame: { type: 'chat', id: 'old', content: '漢'.repeat(3000) }, kind: 'chat', display: 'x', ts: 'ts' };
  S.outbox.set('old', o);
  // What conn.js does with it: refuses and reports (tested in conn.test.mjs).
  P.onTooBig(ctx, o.frame, 9070);
  assert.equal(S.outbox.size, 0);
  assert.deepEqual(saves.at(-1), []);
});

// ---------- resume ----------

test('resumed: false after a reconnect: the view starts over from the latest page, and says so', () => {
  const { S, ctx } = setup();
  P.handleFrame(ctx, { type: 'welcome', user: 'ann', resumed: false });
  const old = [msg('bob'), msg('bob')];
  P.handleFrame(ctx, { type: 'history', messages: old, more: false });
  assert.deepEqual(S.order, old.map((m) => m.id));
  // Reconnect: the server could not honour `since`.
  P.handleFrame(ctx, { type: 'welcome', user: 'ann', resumed: false });
  const latest = [msg('bob'), msg('cid')];
  P.handleFrame(ctx, { type: 'history', messages: latest, more: true });
  assert.deepEqual(S.order, latest.map((m) => m.id), 'not glued under the old messages');
  assert.equal(ctx.ui.calls.clearMessages.length, 1);
  const gap = ctx.ui.calls.systemLine.find(([, kind]) => kind === 'gap');
  assert.ok(gap, 'a visible gap line');
  assert.ok(ctx.ui.calls.announce.some(([t]) => t === P.GAP_TEXT), 'announced');
  assert.equal(S.moreOlder, true, 'older pages reachable');
  assert.equal(S.oldestCursor, latest[0].cursor);
});

test('resumed: false after a reconnect without a cursor: nothing to resume, nothing cleared', () => {
  const { S, ctx } = setup();
  P.handleFrame(ctx, { type: 'welcome', resumed: false });
  P.handleFrame(ctx, { type: 'history', messages: [], more: false });
  P.sendOutbox(ctx, P.outgoing(S, 'pending one', 'p1', 'ts').o);
  P.onTooBig(ctx, S.outbox.get('p1').frame, 9000); // failed, out of the outbox
  P.handleFrame(ctx, { type: 'welcome', resumed: false });
  P.handleFrame(ctx, { type: 'history', messages: [], more: false });
  assert.equal(ctx.ui.calls.clearMessages, undefined);
  assert.equal(S.msgs.get('p1').status, 'failed', 'the failed message stays in view');
});

test('resumed: true after a reconnect: the page is appended, no gap', () => {
  const { S, ctx } = setup();
  P.handleFrame(ctx, { type: 'welcome', resumed: false });
  const old = [msg('bob')];
  P.handleFrame(ctx, { type: 'history', messages: old, more: false });
  P.handleFrame(ctx, { type: 'welcome', resumed: true });
  const since = [msg('bob')];
  P.handleFrame(ctx, { type: 'history', messages: since, more: false });
  assert.deepEqual(S.order, [...old, ...since].map((m) => m.id));
  assert.equal(ctx.ui.calls.clearMessages, undefined);
  assert.ok(ctx.ui.calls.announce.some(([t]) => t === '1 new message while you were away'));
});

// ---------- caps ----------

test('the message list is capped: the oldest go, paging brings them back', () => {
  const { S, ctx } = setup({ caps: { messages: 50, acked: 70 } });
  P.handleFrame(ctx, { type: 'welcome', resumed: false });
  P.handleFrame(ctx, { type: 'history', messages: [], more: false });
  const all = [];
  for (let i = 0; i < 120; i++) { const m = msg('bob'); all.push(m); P.handleFrame(ctx, m); }
  assert.equal(S.order.length, 50);
  assert.equal(S.msgs.size, 50);
  assert.deepEqual(S.order, all.slice(70).map((m) => m.id));
  assert.equal(ctx.ui.calls.removeMessage.length, 70);
  assert.equal(S.moreOlder, true);
  assert.equal(S.oldestCursor, all[70].cursor);
  assert.ok(S.ackedDelivered.size <= 70, `acked set: ${S.ackedDelivered.size}`);
  assert.equal(S.conn.acks.filter(([, s]) => s === 'delivered').length, 120, 'every message acked once');
  P.ackSeen(ctx, all.slice(70).map((m) => m.id));
  assert.ok(S.ackedSeen.size <= 70);
});

test('an older page over the cap drops the newest; "jump to latest" reloads them', () => {
  const { S, ctx } = setup({ caps: { messages: 4, acked: 100 } });
  P.handleFrame(ctx, { type: 'welcome', resumed: false });
  const page = [msg('bob'), msg('bob'), msg('bob')];
  P.handleFrame(ctx, { type: 'history', messages: page, more: true });
  S.olderReq = 1;
  const older = [msg('bob'), msg('bob')];
  P.handleFrame(ctx, { type: 'history', req: 'older:1', messages: older, more: true });
  assert.deepEqual(S.order, [older[0].id, older[1].id, page[0].id, page[1].id]);
  assert.equal(S.newerTrimmed, true);
  // A live message now is counted and acked, not put under a gap.
  const live = msg('bob');
  P.handleFrame(ctx, live);
  assert.equal(S.msgs.has(live.id), false);
  assert.equal(S.unread, 1);
  assert.ok(S.conn.acks.some(([id]) => id === live.id));
  assert.deepEqual(ctx.ui.calls.showUnread.at(-1), [1, true]);
  assert.equal(P.reloadLatest(ctx), true);
  assert.deepEqual(S.conn.sent.at(-1), { type: 'history', limit: 50, req: 'latest' });
  P.handleFrame(ctx, { type: 'history', req: 'latest', messages: [page[2], live], more: true });
  assert.deepEqual(S.order, [page[2].id, live.id]);
  assert.equal(S.newerTrimmed, false);
});

test('sending while paged far back: the latest page first, the new message under it', () => {
  const { S, ctx } = setup({ caps: { messages: 3, acked: 100 } });
  P.handleFrame(ctx, { type: 'welcome', resumed: false });
  const page = [msg('bob'), msg('bob')];
  P.handleFrame(ctx, { type: 'history', messages: page, more: true });
  S.olderReq = 1;
  P.handleFrame(ctx, { type: 'history', req: 'older:1', messages: [msg('bob'), msg('bob')], more: true });
  assert.equal(S.newerTrimmed, true);
  const r = P.outgoing(S, 'back to now', 'mine', 'ts');
  P.sendOutbox(ctx, r.o);
  assert.deepEqual(S.conn.sent.slice(-2), [{ type: 'history', limit: 50, req: 'latest' }, r.frame]);
  assert.equal(S.msgs.has('mine'), false, 'not glued under the old page');
  P.handleFrame(ctx, { type: 'history', req: 'latest', messages: page, more: true });
  assert.deepEqual(S.order, [...page.map((m) => m.id), 'mine']);
  assert.equal(S.msgs.get('mine').status, 'pending');
});

// ---------- receipts and errors ----------

test('receipts: saved clears the outbox; status never goes backwards', () => {
  const { S, ctx } = setup();
  const r = P.outgoing(S, 'hello', 'mine', 'ts');
  P.sendOutbox(ctx, r.o);
  assert.equal(S.msgs.get('mine').status, 'pending');
  P.handleFrame(ctx, { type: 'receipt', id: 'mine', status: 'delivered' });
  P.handleFrame(ctx, { type: 'receipt', id: 'mine', status: 'saved' });
  assert.equal(S.msgs.get('mine').status, 'delivered');
  assert.equal(S.outbox.size, 0);
});

test('unavailable keeps the message and resends it after retry_after_ms', async () => {
  const { S, ctx, clock } = setup();
  const r = P.outgoing(S, 'hello', 'mine', 'ts');
  P.sendOutbox(ctx, r.o);
  S.conn.sent.length = 0;
  P.handleFrame(ctx, { type: 'error', code: 'unavailable', id: 'mine', retry_after_ms: 500 });
  assert.ok(S.outbox.has('mine'));
  await clock.advance(500);
  assert.equal(S.conn.sent.length, 1);
  assert.equal(S.conn.sent[0].id, 'mine');
});

test('typing text: one, two, three, many; expired names drop out', () => {
  const { S, ctx, clock } = setup();
  for (const u of ['dan', 'bob', 'cy', 'eve']) P.handleFrame(ctx, { type: 'typing', sender: u, active: true });
  assert.equal(P.typingText(S, clock.now()), 'bob, cy and 2 others are typing…');
  P.handleFrame(ctx, { type: 'typing', sender: 'eve', active: false });
  assert.equal(P.typingText(S, clock.now()), 'bob, cy and dan are typing…');
  assert.equal(P.typingText(S, clock.now() + P.TYPING_EXPIRE_MS + 1), '');
});

test('incoming (tab title count, notifications): live messages from others only, once each', () => {
  const { S, ctx } = setup();
  const P0 = msg('bob');
  P.onHistory(ctx, { type: 'history', messages: [P0, msg('ann')], more: false });
  assert.equal(ctx.ui.calls.incoming, undefined, 'the first page is not news');
  const live = msg('bob', { content: 'hi @ann' });
  P.onMessage(ctx, live, { live: true });
  P.onMessage(ctx, live, { live: true }); // the same frame again (a resend)
  P.onMessage(ctx, msg('ann'), { live: true });
  assert.deepEqual(ctx.ui.calls.incoming.map(([m]) => m.id), [live.id]);
  // Caught up after a reconnect: news too.
  S.resumed = true;
  const later = msg('cy');
  P.onHistory(ctx, { type: 'history', messages: [later], more: false });
  assert.deepEqual(ctx.ui.calls.incoming.map(([m]) => m.id), [live.id, later.id]);
});
