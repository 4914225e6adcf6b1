// web/js/auth.js: the refresh is scheduled from access_expires_at.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { refreshDelay, createAuth } from '../../web/js/auth.js';
import { FakeClock, settle } from './fakes.mjs';

const iso = (ms) => new Date(ms).toISOString();

test('refreshDelay: a margin before the expiry, never sooner than 1 s', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(refreshDelay(iso(now + 15 * 60_000), now), 14 * 60_000);
  assert.equal(refreshDelay(iso(now + 3000), now), 2000);
  assert.equal(refreshDelay(iso(now - 5000), now), 1000);
  // The server's clock is 10 s ahead of ours: 10 s sooner.
  assert.equal(refreshDelay(iso(now + 15 * 60_000), now, 10_000), 14 * 60_000 - 10_000);
  assert.equal(refreshDelay('not a date', now), null);
});

function setup() {
  const clock = new FakeClock();
  const calls = [];
  let renews = 0;
  const signedOut = [];
  const ttl = 15 * 60_000;
  const api = {
    refresh: async (known) => { calls.push(['refresh', clock.now(), known]); return { access_expires_at: iso(clock.now() + ttl) }; },
    me: async () => { calls.push(['me', clock.now()]); return { access_expires_at: iso(clock.now() + ttl) }; },
  };
  const auth = createAuth({ api, timers: clock.timers, onRenew: () => { renews += 1; }, onSignedOut: (m) => signedOut.push(m) });
  return { clock, calls, auth, ttl, signedOut, renews: () => renews, api };
}

test('the refresh runs a minute before access_expires_at, then the socket is renewed, and again', async () => {
  const t = setup();
  const t0 = t.clock.now();
  t.auth.start({ access_expires_at: iso(t0 + t.ttl) });
  await t.clock.advance(14 * 60_000 - 1);
  assert.equal(t.calls.length, 0, 'not before');
  await t.clock.advance(1);
  assert.deepEqual(t.calls, [['refresh', t0 + 14 * 60_000, t0 + t.ttl]]);
  assert.equal(t.renews(), 1);
  assert.equal(t.auth.stats.refreshes, 1);
  await t.clock.advance(14 * 60_000);
  assert.equal(t.calls.length, 2, 'the next one from the new expiry');
  assert.equal(t.renews(), 2);
  t.auth.stop();
});

test('a 1008 refresh does not shorten the schedule (nothing is "learnt" from closes)', async () => {
  const t = setup();
  t.auth.start({ access_expires_at: iso(t.clock.now() + t.ttl) });
  await t.clock.advance(2000);
  assert.equal(await t.auth.refreshAuth(true), 'ok'); // the socket was closed with 1008
  assert.equal(t.calls.length, 1);
  const after1008 = t.clock.now();
  // Many early 1008s in a row still leave the next planned refresh 14 minutes out.
  for (let i = 0; i < 5; i++) { await t.clock.advance(2000); await t.auth.refreshAuth(true); }
  const last = t.clock.now();
  await t.clock.advance(14 * 60_000 - 1);
  assert.equal(t.calls.length, 6, `only the forced ones: ${JSON.stringify(t.calls)}`);
  await t.clock.advance(1);
  assert.equal(t.calls.length, 7);
  assert.equal(t.calls[6][1], last + 14 * 60_000);
  assert.ok(after1008 < last);
  t.auth.stop();
});

test('a refused refresh signs out; a network error tries again', async () => {
  const t = setup();
  let fail = { status: 0 };
  t.api.refresh = async () => { t.calls.push(['refresh']); throw fail; };
  t.auth.start({ access_expires_at: iso(t.clock.now() + 3000) });
  await t.clock.advance(2000);
  assert.equal(t.calls.length, 1);
  assert.equal(t.signedOut.length, 0);
  fail = { status: 401 };
  await t.clock.advance(5000);
  await settle();
  assert.equal(t.calls.length, 2);
  assert.equal(t.signedOut.length, 1);
  assert.equal(await t.auth.refreshAuth(true), 'unauthorized');
  t.auth.stop();
});
