// Failing over between cluster nodes: web/js/nodes.js with web/js/conn.js,
// driven by a fake socket, a fake clock and a fake /api/cluster/nodes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Connection, CLOSE } from '../../web/js/conn.js';
import { NodeList } from '../../web/js/nodes.js';
import { FakeClock, fakeSockets, fakeEnv, settle } from './fakes.mjs';

// The page was loaded from http://chat.test (fakeEnv's location), which is n1.
const CLUSTER = [
  { node: 'n3', url: 'http://n3.test:8443' },
  { node: 'n1', url: 'http://chat.test' },
  { node: 'n2', url: 'http://n2.test:8442/' },
];

function setup({ list = CLUSTER } = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, all } = fakeSockets();
  const fetches = [];
  const moves = [];
  const answer = { list };
  const nodes = new NodeList({
    // `null`: a single node (the server answered 404).
    fetchNodes: async () => { fetches.push(clock.now()); return answer.list; },
    origin: 'http://chat.test',
    onMove: (n) => moves.push(n && n.node),
  });
  let cursor = null;
  const refreshes = [];
  const conn = new Connection({
    room: 'r',
    clientId: 'web-1',
    since: () => cursor,
    onFrame: () => {},
    onState: () => {},
    refreshAuth: async (force) => { refreshes.push(force); return 'ok'; },
    WebSocket: FakeWebSocket,
    timers: clock.timers,
    env: fakeEnv(),
    nodes,
  });
  return { clock, conn, all, nodes, fetches, moves, answer, refreshes, setCursor: (c) => { cursor = c; } };
}

/** Connects to the first node and is welcomed there (the list is then fetched). */
async function online(t) {
  t.conn.connect();
  t.all[0].welcome();
  await settle();
}

const hostOf = (ws) => ws.url.host;

test('the node list is fetched on the welcome and every 30 s while online; own node first', async () => {
  const t = setup();
  t.conn.connect();
  assert.equal(t.fetches.length, 0, 'not before a welcome: the page may not be logged in');
  t.all[0].welcome();
  await settle();
  assert.equal(t.fetches.length, 1, 'fetched once welcomed');
  assert.deepEqual(t.nodes.nodes.map((n) => n.node), ['n1', 'n2', 'n3'], 'own node first, then by name');
  assert.equal(t.nodes.nodes[1].url, 'http://n2.test:8442', 'trailing slash trimmed');
  assert.equal(t.nodes.name(), 'n1');
  await t.clock.advance(29_000);
  assert.equal(t.fetches.length, 1);
  await t.clock.advance(6_000);
  assert.equal(t.fetches.length, 2, 'refreshed after 30 s');
  await t.clock.advance(31_000);
  assert.equal(t.fetches.length, 3);
  t.conn.stop();
});

test('a 1001 close moves the next attempt to the next node, resuming with since', async () => {
  const t = setup();
  await online(t);
  assert.equal(hostOf(t.all[0]), 'chat.test');
  t.setCursor('c-17');
  t.all[0].serverClose(CLOSE.GOING_AWAY);
  await settle();
  assert.equal(t.all.length, 1, 'not at once: the usual backoff');
  await t.clock.advance(1000);
  assert.equal(t.all.length, 2);
  assert.equal(hostOf(t.all[1]), 'n2.test:8442');
  assert.equal(t.all[1].url.protocol, 'ws:');
  assert.equal(t.all[1].url.pathname, '/ws');
  assert.equal(t.all[1].url.searchParams.get('since'), 'c-17', 'resumes where it was');
  assert.equal(t.all[1].url.searchParams.get('room'), 'r');
  assert.deepEqual(t.moves, ['n2'], 'the API is told to follow');
  t.all[1].welcome();
  await settle();
  assert.equal(t.nodes.name(), 'n2');
  assert.equal(t.fetches.length, 2, 'the list is fetched again from the new node');
  t.conn.stop();
});

test('an upgrade refused with 503 (no welcome) moves on, round the ring', async () => {
  const t = setup();
  await online(t);
  t.setCursor('c-3');
  t.all[0].serverClose(CLOSE.ABNORMAL); // n1 died: a welcomed socket dies without a close frame
  await settle();
  await t.clock.advance(1000);
  assert.equal(hostOf(t.all[1]), 'chat.test', 'a 1006 of a welcomed socket retries the same node first');
  t.all[1].serverClose(CLOSE.ABNORMAL); // refused (connection refused, 503): never welcomed
  await settle();
  await t.clock.advance(2000);
  assert.equal(hostOf(t.all[2]), 'n2.test:8442', 'the next node');
  t.all[2].serverClose(CLOSE.ABNORMAL); // a browser sees a 503 upgrade as 1006
  await settle();
  await t.clock.advance(4000);
  assert.equal(hostOf(t.all[3]), 'n3.test:8443');
  t.all[3].serverClose(CLOSE.ABNORMAL);
  await settle();
  await t.clock.advance(8000);
  assert.equal(hostOf(t.all[4]), 'chat.test', 'and round to the page\'s node');
  assert.equal(t.all[4].url.searchParams.get('since'), 'c-3');
  assert.deepEqual(t.moves, ['n2', 'n3', null]);
  assert.equal(t.refreshes.length, 3, 'each refusal still checks the token (at the next node)');
  t.conn.stop();
});

test('single node (404): no list, every reconnect goes to the page\'s origin as before', async () => {
  const t = setup({ list: null });
  await online(t);
  assert.equal(t.fetches.length, 1, 'asked once');
  assert.equal(t.nodes.cluster, false);
  assert.equal(t.nodes.name(), null, 'no node to show');
  t.setCursor('c-5');
  t.all[0].serverClose(CLOSE.GOING_AWAY);
  await settle();
  await t.clock.advance(1000);
  t.all[1].serverClose(CLOSE.ABNORMAL); // refused
  await settle();
  await t.clock.advance(2000);
  assert.deepEqual(t.all.map(hostOf), ['chat.test', 'chat.test', 'chat.test']);
  assert.equal(t.all[2].url.searchParams.get('since'), 'c-5');
  assert.deepEqual(t.moves, []);
  t.conn.stop();
});

test('a failed list fetch keeps the list; a 404 later returns to the page\'s origin', async () => {
  const t = setup();
  await online(t);
  t.all[0].serverClose(CLOSE.GOING_AWAY);
  await settle();
  await t.clock.advance(1000);
  assert.equal(hostOf(t.all[1]), 'n2.test:8442');
  t.answer.list = undefined; // a broken answer, or (below) a network error
  t.nodes.fetchNodes = async () => { throw new Error('network'); };
  t.all[1].welcome();
  await settle();
  assert.equal(t.nodes.nodes.length, 3, 'kept');
  t.nodes.fetchNodes = async () => null;
  await t.nodes.refresh();
  assert.equal(t.nodes.cluster, false);
  assert.equal(t.nodes.base(), 'http://chat.test');
  assert.deepEqual(t.moves, ['n2', null]);
  t.conn.stop();
});

test('api: /api/cluster/nodes 404 is a single node; calls follow the node; a foreign 401 is not a sign-out', async (t) => {
  const calls = [];
  let status = 404;
  const reply = (code, body) => ({
    status: code, ok: code >= 200 && code < 300,
    headers: { get: () => null },
    json: async () => body,
  });
  const saved = { fetch: globalThis.fetch, location: globalThis.location };
  globalThis.location = { origin: 'http://chat.test' };
  globalThis.fetch = async (url, init) => {
    calls.push([url, init.credentials]);
    if (status === 200) return reply(200, { nodes: CLUSTER });
    return reply(status, { error: { code: status === 404 ? 'not_found' : 'unauthorized' } });
  };
  t.after(() => Object.assign(globalThis, saved));
  const api = await import('../../web/js/api.js');
  assert.equal(await api.clusterNodes(), null, '404: not a cluster');
  status = 200;
  assert.deepEqual((await api.clusterNodes()).map((n) => n.node), ['n3', 'n1', 'n2']);
  assert.deepEqual(calls[0], ['/api/cluster/nodes', 'same-origin']);
  api.setBase('http://n2.test:8442/');
  status = 401;
  await assert.rejects(api.me(), (e) => e.status === 401, '/api/me: a 401, which leads to a refresh');
  assert.deepEqual(calls.at(-1), ['http://n2.test:8442/api/me', 'include']);
  // api.refresh's environment: no other tab's refresh to reuse, no Web Locks.
  globalThis.localStorage = { getItem: () => null, setItem: () => {} };
  const nav = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
  Object.defineProperty(globalThis, 'navigator', { value: {}, configurable: true, writable: true });
  t.after(() => {
    delete globalThis.localStorage;
    if (nav) Object.defineProperty(globalThis, 'navigator', nav); else delete globalThis.navigator;
  });
  await assert.rejects(api.refresh(), (e) => e.status === 0, 'another host\'s refusal: like an unreachable node');
  assert.deepEqual(calls.at(-1), ['http://n2.test:8442/api/auth/refresh', 'include']);
  api.setBase('http://chat.test');
  await assert.rejects(api.refresh(), (e) => e.status === 401, 'the page\'s own node: a real 401 (sign-out)');
  assert.deepEqual(calls.at(-1), ['/api/auth/refresh', 'same-origin']);
});
