// A busy room: a burst of messages stays under the server's rate limit,
// history pages load on scrolling up, and "new messages" / seen receipts
// follow what the reader actually has on screen.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  launch, person, uniqueName, signup, joinRoom, send, messages, waitFor, shot, online,
} from './helpers.mjs';

let browser;
let alice; let bob;
let pa; let pb;
const room = uniqueName('busy').replace(/_/g, '-');
const names = { a: uniqueName('alice'), b: uniqueName('bob') };
const BULK = 60;
const rateLimited = [];

before(async () => {
  browser = await launch();
  alice = await person(browser);
  bob = await person(browser);
});

after(async () => {
  await browser?.close();
});

test(`a burst of ${BULK} messages: all saved, no rate_limited error`, async () => {
  pa = await alice.page('/');
  pa.on('websocket', (ws) => ws.on('framereceived', (f) => {
    if (String(f.payload).includes('"rate_limited"')) rateLimited.push(String(f.payload));
  }));
  await signup(pa, names.a);
  await joinRoom(pa, room);
  await pa.evaluate((n) => {
    const box = document.getElementById('composer-input');
    const form = document.getElementById('composer');
    for (let i = 0; i < n; i++) { box.value = `bulk ${i}`; form.requestSubmit(); }
  }, BULK);
  await waitFor(async () => (await pa.locator('#messages li.msg').count()) === BULK
      && (await pa.locator('#messages li.msg[data-status="pending"]').count()) === 0,
  { timeout: 20000, what: 'every bulk message saved' });
  assert.deepEqual(rateLimited, []);
  assert.equal(await pa.locator('#messages li.system.error').count(), 0);
});

test('history: the latest page on join, older pages on scrolling up', async () => {
  pb = await bob.page(`/#${room}`);
  await signup(pb, names.b);
  await online(pb);
  await messages(pb, `bulk ${BULK - 1}`).waitFor();
  assert.equal(await pb.locator('#messages li.msg').count(), 50);
  await pb.getByRole('button', { name: 'Load older messages' }).waitFor();
  await pb.locator('#scroller').evaluate((s) => { s.scrollTop = 0; s.dispatchEvent(new Event('scroll')); });
  await messages(pb, 'bulk 0').waitFor();
  await pb.locator('#history-status', { hasText: 'start of the room' }).waitFor();
  const bodies = await pb.locator('#messages li.msg .body').allTextContents();
  assert.deepEqual(bodies, Array.from({ length: BULK }, (_, i) => `bulk ${i}`), 'in order, once each');
});

test('"new messages" marker while scrolled up; seen only once on screen', async () => {
  await pb.locator('#scroller').evaluate((s) => { s.scrollTop = 0; });
  await send(pa, 'while you were reading');
  await messages(pb, 'while you were reading').waitFor({ state: 'attached' });
  await pb.locator('#messages .new-marker').waitFor();
  const jump = pb.locator('#jump-btn');
  await jump.waitFor();
  assert.match(await jump.textContent(), /1 new message/);
  await pa.locator('li.msg[data-status="delivered"]', { hasText: 'while you were reading' }).waitFor();
  await shot(pb, 'new-messages');
  // Delivered, but not seen while Bob looks at older messages.
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(await messages(pa, 'while you were reading').getAttribute('data-status'), 'delivered');
  await shot(pa, 'ticks-delivered-and-seen');
  await jump.click();
  await jump.waitFor({ state: 'hidden' });
  await pa.locator('li.msg[data-status="seen"]', { hasText: 'while you were reading' }).waitFor();
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
});
