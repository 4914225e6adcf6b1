// Following the ring: before each socket web/js/conn.js asks the NodeList's
// route (GET /api/cluster/route at the node in use) and connects where it
// says; a node that cannot be reached sends the question round the ring.
// Driven by a fake socket, a fake clock and fake route/nodes endpoints that
// answer per node (the node asked is the NodeList's `base()`, where the API goes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Connection, CLOSE } from '../../web/js/conn.js';
import { NodeList } from '../../web/js/nodes.js';
import { FakeClock, fakeSockets, fakeEnv, settle } from './fakes.mjs';

// The page was loaded from http://chat.test (fakeEnv's location), which is n1.
const CLUSTER = [
  { node: 'n1', url: 'http://chat.test' },
  { node: 'n2', url: 'http://n2.test:8442' },
  { node: 'n3', url: 'http://n3.test:8443' },
];
const WS = { n1: 'ws://chat.test/ws', n2: 'ws://n2.test:8442/ws', n3: 'ws://n3.test:8443/ws' };
const unreachable = () => Object.assign(new Error('network'), { status: 0 });
const status = (s) => Object.assign(new Error(`HTTP ${s}`), { status: s });

/**
 * `home`: the node every live node names as the user's home (or a function
 * of the node asked, for nodes that disagree); `dead`: nodes whose route
 * fails as an unreachable node does; `list`: /api/cluster/nodes (null: 404).
 */
function setup({ home = 'n2', list = CLUSTER, routeOff = false } = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, all } = fakeSockets();
  const asked = []; // the node each route question went to
  const moves = [];
  const world = { home, dead: new Set(), list, fail: null };
  const nodes = new NodeList({
    fetchNodes: async () => world.list,
    fetchRoute: async () => {
      const at = CLUSTER.find((n) => n.url === nodes.base());
      asked.push(at.node);
      if (world.dead.has(at.node)) throw unreachable();
      if (world.fail) throw world.fail;
      if (world.list === null) return null; // a single node: 404
      const h = typeof world.home === 'function' ? world.home(at.node) : world.home;
      return { url: WS[h], node: h };
    },
    origin: 'http://chat.test',
    onMove: (n) => moves.push(n && n.node),
  });
  if (routeOff) nodes.fetchRoute = null; // a client that ignores the route
  let cursor = null;
  const conn = new Connection({
    room: 'r',
    clientId: 'web-1',
    since: () => cursor,
    onFrame: () => {},
    onState: () => {},
    refreshAuth: async () => 'ok',
    WebSocket: FakeWebSocket,
    timers: clock.timers,
    env: fakeEnv(),
    nodes,
  });
  return { clock, conn, all, nodes, asked, moves, world, setCursor: (c) => { cursor = c; } };
}

const hostOf = (ws) => ws.url.host;

test('before the first socket the route is asked at the page\'s node; the socket goes to the home it names', async () => {
  const t = setup();
  t.conn.connect();
  assert.equal(t.all.length, 0, 'no socket before the answer');
  await settle();
  assert.deepEqual(t.asked, ['n1']);
  assert.equal(t.all.length, 1);
  assert.equal(t.all[0].url.href, 'ws://n2.test:8442/ws?room=r&client=web-1&batch=1', 'the named URL, today\'s query');
  assert.deepEqual(t.moves, ['n2'], 'the API follows the socket\'s node');
  assert.equal(t.nodes.base(), 'http://n2.test:8442');
  t.all[0].welcome();
  await settle();
  assert.equal(t.nodes.name(), 'n2', 'the page shows the home node');
  t.conn.stop();
});

test('without a route to ask (no fetchRoute), the first socket goes to the page\'s node as before', async () => {
  const t = setup({ routeOff: true });
  t.conn.connect();
  await settle();
  assert.equal(hostOf(t.all[0]), 'chat.test');
  t.conn.stop();
});

test('the home is the page\'s own node: the socket stays at the page\'s origin, named', async () => {
  const t = setup({ home: 'n1' });
  t.conn.connect();
  await settle();
  assert.equal(t.all[0].url.href, 'ws://chat.test/ws?room=r&client=web-1&batch=1');
  assert.deepEqual(t.moves, [], 'nothing moved');
  assert.equal(t.nodes.base(), 'http://chat.test');
  assert.equal(t.nodes.name(), 'n1', 'named before any list');
  t.conn.stop();
});

test('a 1001 close asks the route again and goes to the new home, resuming with since', async () => {
  const t = setup();
  t.conn.connect();
  await settle();
  t.all[0].welcome();
  await settle();
  t.setCursor('c-9');
  t.world.home = 'n3'; // the ring changed: n2 closes its moved users with 1001
  t.all[0].serverClose(CLOSE.GOING_AWAY);
  await settle();
  await t.clock.advance(1000);
  assert.equal(t.asked.length, 2, 'asked again');
  assert.equal(hostOf(t.all[1]), 'n3.test:8443');
  assert.equal(t.all[1].url.searchParams.get('since'), 'c-9');
  assert.equal(t.all[1].url.searchParams.get('room'), 'r');
  t.all[1].welcome();
  await settle();
  assert.equal(t.nodes.name(), 'n3');
  t.conn.stop();
});

test('a socket that fails to open (a 307 looks like that) asks the route again', async () => {
  // The page's node still has the old ring and names n2; n2 redirects (fails).
  const t = setup({ home: (at) => (at === 'n1' ? 'n2' : 'n3') });
  t.conn.connect();
  await settle();
  assert.equal(hostOf(t.all[0]), 'n2.test:8442');
  t.all[0].serverClose(CLOSE.ABNORMAL); // never welcomed
  await settle();
  await t.clock.advance(1000);
  // No list before a welcome: asked at the node in use, which redirected
  // because it knows better.
  assert.deepEqual(t.asked, ['n1', 'n2'], 'asked again');
  assert.equal(hostOf(t.all[1]), 'n3.test:8443');
  t.conn.stop();
});

test('the home node dies: its route fails, the next node of the ring is asked, the socket goes to the new home', async () => {
  const t = setup();
  t.conn.connect();
  await settle();
  t.all[0].welcome();
  await settle();
  assert.equal(t.nodes.nodes.length, 3, 'the list came with the welcome');
  t.setCursor('c-4');
  t.world.dead.add('n2');
  t.world.home = 'n1';
  t.all[0].serverClose(CLOSE.ABNORMAL); // a welcomed socket dies without a close frame
  await settle();
  await t.clock.advance(1000);
  assert.deepEqual(t.asked, ['n1', 'n2', 'n3'], 'asked at n2 (the node in use), unreachable, then at n3');
  assert.equal(t.all[1].url.href, 'ws://chat.test/ws?room=r&client=web-1&batch=1&since=c-4', 'the new home: n1');
  assert.deepEqual(t.moves, ['n2', 'n3', null]);
  assert.equal(t.nodes.base(), 'http://chat.test');
  t.conn.stop();
});

test('no node answers the route: the socket goes where the ring says, as before routing', async () => {
  const t = setup();
  t.conn.connect();
  await settle();
  t.all[0].welcome();
  await settle();
  for (const n of ['n1', 'n2', 'n3']) t.world.dead.add(n);
  t.all[0].serverClose(CLOSE.ABNORMAL);
  await settle();
  await t.clock.advance(1000);
  assert.deepEqual(t.asked.slice(1), ['n2', 'n3', 'n1'], 'each node asked once');
  assert.equal(t.all.length, 2, 'a socket still goes out');
  assert.equal(hostOf(t.all[1]), 'chat.test', 'at the last node asked');
  assert.deepEqual(t.moves, ['n2', 'n3', null]);
  t.conn.stop();
});

test('a route that fails with 401 or 503 moves nothing: the socket goes to the node in use', async () => {
  for (const code of [401, 503]) {
    const t = setup();
    t.conn.connect();
    await settle();
    t.all[0].welcome();
    await settle();
    t.world.fail = status(code);
    t.all[0].serverClose(CLOSE.ABNORMAL); // welcomed: the same node first
    await settle();
    await t.clock.advance(1000);
    assert.deepEqual(t.asked, ['n1', 'n2'], `${code}: asked once`);
    assert.equal(hostOf(t.all[1]), 'n2.test:8442', `${code}: the node in use`);
    assert.deepEqual(t.moves, ['n2']);
    t.conn.stop();
  }
});

test('a strange route answer is ignored', async () => {
  const t = setup();
  t.nodes.fetchRoute = async () => ({ url: 'javascript:alert(1)', node: 'n2' });
  t.conn.connect();
  await settle();
  assert.equal(hostOf(t.all[0]), 'chat.test');
  assert.deepEqual(t.moves, []);
  t.conn.stop();
});

test('single node (route 404): the page\'s origin, and the route is not asked again', async () => {
  const t = setup({ list: null });
  t.conn.connect();
  await settle();
  assert.deepEqual(t.asked, ['n1']);
  t.all[0].serverClose(CLOSE.ABNORMAL); // refused before any welcome (and its node list)
  await settle();
  await t.clock.advance(1000);
  assert.deepEqual(t.asked, ['n1'], 'the route\'s own 404 is remembered');
  t.all[1].welcome();
  await settle();
  t.setCursor('c-5');
  t.all[1].serverClose(CLOSE.GOING_AWAY);
  await settle();
  await t.clock.advance(2000);
  t.all[2].serverClose(CLOSE.ABNORMAL);
  await settle();
  await t.clock.advance(4000);
  assert.deepEqual(t.all.map(hostOf), ['chat.test', 'chat.test', 'chat.test', 'chat.test']);
  assert.equal(t.all[3].url.searchParams.get('since'), 'c-5');
  assert.deepEqual(t.asked, ['n1'], 'asked once');
  assert.deepEqual(t.moves, []);
  assert.equal(t.nodes.name(), null);
  t.conn.stop();
});

test('an answer that arrives after the attempt is over opens nothing', async () => {
  const t = setup();
  let release;
  t.nodes.fetchRoute = () => new Promise((r) => { release = r; });
  t.conn.connect();
  await settle();
  t.conn.stop();
  release({ url: WS.n2, node: 'n2' });
  await settle();
  assert.equal(t.all.length, 0, 'stopped: no socket');

  const u = setup();
  const pending = [];
  u.nodes.fetchRoute = () => new Promise((r) => { pending.push(r); });
  u.conn.connect();
  await settle();
  u.conn.reconnectNow(); // e.g. the `online` event: a newer attempt
  await settle();
  pending[0]({ url: WS.n3, node: 'n3' });
  await settle();
  assert.equal(u.all.length, 0, 'the older answer is dropped');
  pending[1]({ url: WS.n2, node: 'n2' });
  await settle();
  assert.equal(u.all.length, 1);
  assert.equal(hostOf(u.all[0]), 'n2.test:8442');
  u.conn.stop();
});

test('api: /api/cluster/route at the node in use; 404 is a single node; unreachable is status 0', async (t) => {
  const calls = [];
  let reply = { status: 200, body: { url: WS.n2, node: 'n2' } };
  const saved = { fetch: globalThis.fetch, location: globalThis.location };
  globalThis.location = { origin: 'http://chat.test' };
  globalThis.fetch = async (url, init) => {
    calls.push([url, init.credentials, !!init.signal]);
    if (reply === 'down') throw new TypeError('Failed to fetch');
    return {
      status: reply.status, ok: reply.status >= 200 && reply.status < 300,
      headers: { get: () => null },
      json: async () => reply.body,
    };
  };
  t.after(() => Object.assign(globalThis, saved));
  const api = await import('../../web/js/api.js');
  api.setBase('');
  assert.deepEqual(await api.clusterRoute(), { url: WS.n2, node: 'n2' });
  assert.deepEqual(calls.at(-1), ['/api/cluster/route', 'same-origin', true], 'with a timeout');
  api.setBase('http://n3.test:8443');
  reply = { status: 404, body: { error: { code: 'not_found' } } };
  assert.equal(await api.clusterRoute(), null);
  assert.deepEqual(calls.at(-1), ['http://n3.test:8443/api/cluster/route', 'include', true]);
  reply = { status: 503, body: { error: { code: 'unavailable' } } };
  await assert.rejects(api.clusterRoute(), (e) => e.status === 503);
  reply = 'down';
  await assert.rejects(api.clusterRoute(), (e) => e.status === 0);
  api.setBase('');
});
