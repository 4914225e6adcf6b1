// A busy room: a burst of messages stays under the server's rate limit,
// history pages load on scrolling up, and "new messages" / seen receipts
// follow what the reader actually has on screen. Each test has its own
// people and room.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  launch, person, uniqueName, uniqueRoom, signup, joinRoom, send, messages, mine, shot, online, people, burst,
} from './helpers.mjs';

let browser;
const BULK = 60;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** Alice alone in a fresh room with `BULK` messages "bulk i"; Bob joins after. */
async function busyRoom(t) {
  const room = uniqueRoom('busy');
  const [a] = await people(t, browser, room, ['alice']);
  await burst(a.page, 'bulk', BULK);
  const bob = await person(browser);
  t.after(() => bob.context.close().catch(() => {}));
  const pb = await bob.page(`/#${room}`);
  const b = uniqueName('bob');
  await signup(pb, b);
  await online(pb);
  await messages(pb, `bulk ${BULK - 1}`).waitFor();
  return { a, pb, bob };
}

test(`a burst of ${BULK} messages: all saved, no rate_limited error`, async (t) => {
  const alice = await person(browser);
  t.after(() => alice.context.close());
  const rateLimited = [];
  const pa = await alice.page('/');
  pa.on('websocket', (ws) => ws.on('framereceived', (f) => {
    if (String(f.payload).includes('"rate_limited"')) rateLimited.push(String(f.payload));
  }));
  await signup(pa, uniqueName('alice'));
  await joinRoom(pa, uniqueRoom('burst'));
  await burst(pa, 'bulk', BULK);
  assert.equal(await pa.getByRole('log', { name: 'Messages' }).locator('li.msg').count(), BULK);
  assert.equal(await mine(pa, `bulk ${BULK - 1}`).count(), 1);
  assert.deepEqual(rateLimited, []);
  assert.equal(await pa.getByRole('log', { name: 'Messages' }).locator('li.system.error').count(), 0);
});

test('history: the latest page on join, older pages on scrolling up', async (t) => {
  const { pb } = await busyRoom(t);
  assert.equal(await pb.getByRole('log', { name: 'Messages' }).locator('li.msg').count(), 50);
  await pb.getByRole('button', { name: 'Load older messages' }).waitFor();
  await pb.getByRole('log', { name: 'Messages' }).evaluate((s) => { s.scrollTop = 0; s.dispatchEvent(new Event('scroll')); });
  await messages(pb, 'bulk 0').waitFor();
  await pb.getByText('This is the start of the room.').waitFor();
  const bodies = await pb.getByRole('log', { name: 'Messages' }).locator('li.msg .body').allTextContents();
  assert.deepEqual(bodies, Array.from({ length: BULK }, (_, i) => `bulk ${i}`), 'in order, once each');
});

test('"new messages" marker while scrolled up; seen only once on screen', async (t) => {
  const { a, pb, bob } = await busyRoom(t);
  const pa = a.page;
  await pb.getByRole('log', { name: 'Messages' }).evaluate((s) => { s.scrollTop = 0; });
  await send(pa, 'while you were reading');
  const atBob = messages(pb, 'while you were reading');
  await atBob.waitFor({ state: 'attached' });
  await pb.getByText('New messages', { exact: true }).waitFor();
  const jump = pb.getByRole('button', { name: '1 new message below' });
  await jump.waitFor();
  await mine(pa, 'while you were reading', ['delivered']).waitFor();
  // Bob's page has judged the message off screen (the observer ran) and sent
  // `delivered` only; Alice's tick stays at delivered.
  await pb.locator('li.msg[data-on-screen="false"][data-acked="delivered"]', { hasText: 'while you were reading' }).waitFor();
  await shot(pb, 'new-messages');
  assert.equal(await messages(pa, 'while you were reading').getAttribute('data-status'), 'delivered');
  await shot(pa, 'ticks-delivered-and-seen');
  await jump.click();
  await jump.waitFor({ state: 'hidden' });
  await atBob.and(pb.locator('[data-acked="seen"]')).waitFor();
  await mine(pa, 'while you were reading', ['seen']).waitFor();
  assert.deepEqual(a.problems, []);
  assert.deepEqual(bob.problems, []);
});
