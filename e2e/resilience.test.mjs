// Staying connected: going offline and back, a second tab with the same
// client id, reloads, logging out and in, and an access token that expires.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import net from 'node:net';
import {
  BASE_URL, launch, person, uniqueName, signup, login, joinRoom, send, messages, waitFor, shot, online,
} from './helpers.mjs';

let browser;
let alice; let bob;
let pa; let pb;
const room = uniqueName('net').replace(/_/g, '-');
const names = { a: uniqueName('alice'), b: uniqueName('bob') };

before(async () => {
  browser = await launch();
  alice = await person(browser);
  bob = await person(browser);
  pa = await alice.page('/');
  await signup(pa, names.a);
  await joinRoom(pa, room);
  pb = await bob.page(`/#${room}`);
  await signup(pb, names.b);
  await online(pb);
  await pa.locator(`#people-list button[data-user="${names.b}"]`).waitFor();
});

after(async () => {
  await browser?.close();
});

test('offline while others talk: back online, every message exactly once', async () => {
  await send(pa, 'before the storm');
  await messages(pb, 'before the storm').waitFor();
  await bob.context.setOffline(true);
  await pb.locator('#conn[data-state="offline"]').waitFor({ timeout: 5000 });
  await pb.locator('#conn-banner').waitFor();
  // Bob writes while offline: kept as pending.
  await send(pb, 'written offline');
  await pb.locator('li.msg[data-status="pending"]', { hasText: 'written offline' }).waitFor();
  await shot(pb, 'offline');
  const sent = ['while away 1', 'while away 2', 'while away 3'];
  for (const t of sent) await send(pa, t);
  for (const t of sent) await pa.locator('li.msg[data-status="saved"], li.msg[data-status="delivered"], li.msg[data-status="seen"]', { hasText: t }).first().waitFor();
  await bob.context.setOffline(false);
  await online(pb);
  for (const t of sent) await messages(pb, t).waitFor();
  await messages(pa, 'written offline').waitFor();
  await pb.locator('li.msg[data-status="saved"], li.msg[data-status="delivered"], li.msg[data-status="seen"]', { hasText: 'written offline' }).first().waitFor();
  // Let any duplicate have a chance to show up, then count.
  await new Promise((r) => setTimeout(r, 500));
  for (const t of ['before the storm', ...sent, 'written offline']) {
    assert.equal(await messages(pb, t).count(), 1, `bob sees "${t}" once`);
    assert.equal(await messages(pa, t).count(), 1, `alice sees "${t}" once`);
  }
  // No id twice on either page.
  for (const p of [pa, pb]) {
    const ids = await p.locator('#messages li.msg').evaluateAll((els) => els.map((e) => e.dataset.id));
    assert.equal(new Set(ids).size, ids.length, 'ids unique');
  }
  assert.deepEqual(bob.problems, []);
});

test('watchdog: a socket that goes silent is noticed and replaced', async () => {
  const carol = await person(browser);
  let dead = false;
  let connections = 0;
  // A socket that stays open but carries nothing (a dead NAT mapping, say).
  await carol.context.routeWebSocket(/\/ws\?/, (ws) => {
    connections += 1;
    const server = ws.connectToServer();
    ws.onMessage((m) => { if (!dead) server.send(m); });
    server.onMessage((m) => { if (!dead) ws.send(m); });
  });
  const pc = await carol.page(`/?watchdog=1500#${room}`);
  await signup(pc, uniqueName('carol'));
  const states = [];
  await pc.exposeFunction('__state', (st) => states.push(st));
  await pc.evaluate(() => new MutationObserver(() => window.__state(document.getElementById('conn').dataset.state))
    .observe(document.getElementById('conn'), { attributes: true }));
  dead = true;
  await send(pa, 'during the silence');
  await waitFor(() => states.includes('reconnecting'), { timeout: 8000, what: 'watchdog to notice' });
  dead = false;
  await online(pc);
  await messages(pc, 'during the silence').waitFor();
  assert.equal(await messages(pc, 'during the silence').count(), 1);
  assert.ok(connections >= 2, `connections: ${connections}`);
  await carol.context.close();
});

test('a second tab with the same client id replaces the first', async () => {
  const clientId = await pa.evaluate(() => document.body.dataset.client);
  assert.ok(clientId);
  const pa2 = await alice.context.newPage();
  await pa2.goto(`${BASE_URL}/?client=${encodeURIComponent(clientId)}#${room}`);
  await online(pa2);
  await pa.locator('#conn[data-state="replaced"]').waitFor({ timeout: 5000 });
  const btn = pa.getByRole('button', { name: 'Use this tab instead' });
  await btn.waitFor();
  await shot(pa, 'replaced');
  // No automatic reconnect: still replaced a while later.
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await pa.locator('#conn').getAttribute('data-state'), 'replaced');
  // Messages keep arriving in the new tab.
  await send(pb, 'to the new tab');
  await messages(pa2, 'to the new tab').waitFor();
  // Taking over again swaps the roles.
  await btn.click();
  await online(pa);
  await pa2.locator('#conn[data-state="replaced"]').waitFor({ timeout: 5000 });
  await messages(pa, 'to the new tab').waitFor();
  await pa2.close();
});

test('the session survives a reload; log out and back in', async () => {
  await pb.reload();
  await pb.locator('#me-name', { hasText: names.b }).waitFor();
  await online(pb);
  await pb.locator('#room-title', { hasText: `#${room}` }).waitFor();
  await messages(pb, 'before the storm').waitFor();
  assert.equal(await messages(pb, 'written offline').count(), 1);
  await pb.getByRole('button', { name: 'Log out' }).click();
  await pb.getByRole('heading', { name: 'Log in or sign up' }).waitFor();
  await pb.reload();
  await pb.getByRole('heading', { name: 'Log in or sign up' }).waitFor();
  // Wrong password is refused with a message.
  await pb.getByLabel('Username').fill(names.b);
  await pb.getByLabel('Password').fill('not the password');
  await pb.getByRole('button', { name: 'Log in' }).click();
  await pb.locator('#auth-error', { hasText: 'Wrong username or password' }).waitFor();
  await login(pb, names.b);
  await messages(pb, 'before the storm').waitFor();
});

async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

test('an expired access token is refreshed and the socket comes back', { skip: process.env.HUBBUB_BIN ? false : 'needs HUBBUB_BIN (run.sh sets it)' }, async () => {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'hubbub-e2e-'));
  const web = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', 'web');
  // A server of its own, plain HTTP, with 3-second access tokens
  // (HUBBUB_E2E_ARGS: the limit and TLS flags run.sh found in this build).
  const extra = (process.env.HUBBUB_E2E_ARGS || '').split(' ').filter(Boolean);
  const srv = spawn(process.env.HUBBUB_BIN, ['--listen', `127.0.0.1:${port}`, '--data-dir', dir,
    '--web-dir', web, '--access-ttl-secs', '3', ...extra], { stdio: 'ignore' });
  const base = `http://127.0.0.1:${port}`;
  const b2 = await launch();
  try {
    await waitFor(async () => (await fetch(`${base}/healthz`)).ok, { what: 'second server' });
    const ctx = await b2.newContext();
    const page = await ctx.newPage();
    const states = [];
    await page.exposeFunction('__state', (s) => states.push(s));
    await page.goto(`${base}/#ttl`);
    await signup(page, uniqueName('tok'));
    await page.evaluate(() => new MutationObserver(() => window.__state(document.getElementById('conn').dataset.state))
      .observe(document.getElementById('conn'), { attributes: true }));
    // Past two token lifetimes: the server closes with 1008, the client
    // refreshes and reconnects; the person never sees the login form.
    await new Promise((r) => setTimeout(r, 7000));
    await online(page);
    await send(page, 'still here');
    await page.locator('li.msg[data-status="saved"]', { hasText: 'still here' }).waitFor({ timeout: 8000 });
    assert.equal(await page.locator('#auth-view').isHidden(), true);
    assert.ok(!states.includes('signed-out'), `states: ${states}`);
  } finally {
    await b2.close();
    srv.kill();
    await new Promise((r) => srv.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
});
