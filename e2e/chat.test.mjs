// Two and three people chatting: messages, ticks, typing, private messages,
// commands, and user content that must stay text.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  launch, person, uniqueName, signup, joinRoom, send, messages, waitFor, shot, recordTicks, online,
} from './helpers.mjs';

let browser;
let alice; let bob; let carol;
let pa; let pb; let pc;
const room = uniqueName('room').replace(/_/g, '-').slice(0, 30);
const names = { a: uniqueName('alice'), b: uniqueName('bob'), c: uniqueName('carol') };

before(async () => {
  browser = await launch();
  alice = await person(browser);
  bob = await person(browser);
  carol = await person(browser);
});

after(async () => {
  await browser?.close();
});

test('people sign up, join a room and chat', async () => {
  pa = await alice.page('/');
  await pa.getByRole('heading', { name: 'Log in or sign up' }).waitFor();
  await shot(pa, 'login');
  await signup(pa, names.a);
  await joinRoom(pa, room);

  pb = await bob.page(`/#${room}`); // a room link works as well as the join form
  await signup(pb, names.b);
  await pb.locator('#room-title', { hasText: `#${room}` }).waitFor();
  await online(pb);

  // Presence: each sees the other online.
  await pa.locator(`#people-list button[data-user="${names.b}"]`).waitFor();
  await pb.locator(`#people-list button[data-user="${names.a}"]`).waitFor();

  await send(pa, 'hello bob');
  await messages(pb, 'hello bob').waitFor();
  await send(pb, 'hi alice\nsecond line');
  await messages(pa, 'hi alice\nsecond line').waitFor();
  assert.equal(await messages(pa, 'hello bob').count(), 1);
  assert.equal(await messages(pb, 'hi alice\nsecond line').count(), 1);
  // Both sides list the room as recent.
  await pa.locator(`#room-list button[data-room="${room}"][aria-current="true"]`).waitFor();
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
});

test('ticks go pending → saved ✓ → delivered ✓✓ → seen', async () => {
  await recordTicks(pa);
  await send(pa, 'tick tock');
  const mine = messages(pa, 'tick tock');
  await mine.waitFor();
  await pa.locator('li.msg[data-status="seen"]', { hasText: 'tick tock' }).waitFor({ timeout: 10000 });
  const id = await mine.getAttribute('data-id');
  const seq = await pa.evaluate((i) => window.__ticks[i], id);
  const rank = { pending: 0, saved: 1, delivered: 2, seen: 3 };
  assert.equal(seq[0], 'pending', `sequence ${seq}`);
  assert.equal(seq[seq.length - 1], 'seen', `sequence ${seq}`);
  for (let i = 1; i < seq.length; i++) assert.ok(rank[seq[i]] > rank[seq[i - 1]], `never backwards: ${seq}`);
  assert.ok(seq.includes('delivered'), `✓✓ before seen: ${seq}`);
  // A text alternative, not only colour.
  const tick = mine.locator('.tick');
  assert.equal(await tick.locator('.tick-text').textContent(), 'Seen');
  assert.equal(await tick.locator('.tick-icon').getAttribute('aria-hidden'), 'true');
  // Bob's copy of Alice's message carries no tick of his own.
  assert.equal(await messages(pb, 'tick tock').locator('.tick:not([hidden])').count(), 0);
  await shot(pa, 'chat');
});

test('typing indicator appears and disappears', async () => {
  const box = pb.getByLabel('Message', { exact: true });
  await box.click();
  await box.pressSequentially('I am wri', { delay: 30 });
  await pa.locator('#typing', { hasText: `${names.b} is typing…` }).waitFor({ timeout: 5000 });
  // Sending ends it at once.
  await box.pressSequentially('ting', { delay: 20 });
  await box.press('Enter');
  await messages(pa, 'I am writing').waitFor();
  await waitFor(async () => (await pa.locator('#typing').textContent()) === '', { what: 'typing cleared by message' });
  // Stopping without sending ends it too (idle stop or the 6 s expiry).
  await box.pressSequentially('hmm', { delay: 30 });
  await pa.locator('#typing', { hasText: 'is typing' }).waitFor({ timeout: 5000 });
  await waitFor(async () => (await pa.locator('#typing').textContent()) === '',
    { timeout: 9000, what: 'typing to expire' });
  await box.fill('');
});

test('a private message reaches only its target', async () => {
  pc = await carol.page(`/#${room}`);
  await signup(pc, names.c);
  await online(pc);
  await pa.locator(`#people-list button[data-user="${names.c}"]`).waitFor();
  await pa.locator(`#people-list button[data-user="${names.b}"]`).click();
  await pa.locator('#pm-chip', { hasText: names.b }).waitFor();
  await send(pa, 'psst, just for bob');
  const atBob = messages(pb, 'psst, just for bob');
  await atBob.waitFor();
  assert.match(await atBob.getAttribute('class'), /\bprivate\b/);
  assert.match(await atBob.locator('.pm-label').textContent(), /private to you/);
  await pa.locator('li.msg.private[data-status="seen"]', { hasText: 'psst, just for bob' }).waitFor();
  assert.match(await messages(pa, 'psst, just for bob').locator('.pm-label').textContent(), new RegExp(`private to ${names.b}`));
  // Escape leaves private mode.
  await pa.getByLabel('Message', { exact: true }).press('Escape');
  await pa.locator('#pm-chip').waitFor({ state: 'hidden' });
  // The /msg command does the same.
  await send(pa, `/msg ${names.b} second secret`);
  await messages(pb, 'second secret').waitFor();
  // A public message afterwards: when Carol has it she would have had the others.
  await send(pa, 'public again');
  await messages(pc, 'public again').waitFor();
  await messages(pb, 'public again').waitFor();
  assert.equal(await pc.locator('#messages', { hasText: 'psst' }).count(), 0);
  assert.equal(await pc.locator('#messages', { hasText: 'second secret' }).count(), 0);
  assert.equal(await messages(pa, 'second secret').count(), 1);
  await shot(pb, 'private');
});

test('commands pass through; system lines show', async () => {
  await send(pa, '/shrug');
  await messages(pb, '¯\\_(ツ)_/¯').waitFor();
  await messages(pa, '¯\\_(ツ)_/¯').waitFor();
  await send(pa, '/ping');
  await pa.locator('#messages li.system', { hasText: 'pong' }).waitFor();
  await send(pa, '/nosuchcommand');
  await pa.locator('#messages li.system.error').waitFor();
  assert.equal(await messages(pa, '/nosuchcommand').count(), 0);
  // A private message to someone who never joined fails visibly, in words.
  await send(pa, '/msg nobody_here_zz are you there');
  const failed = pa.locator('li.msg[data-status="failed"]', { hasText: 'are you there' });
  await failed.waitFor();
  assert.match(await failed.locator('.tick-text').textContent(), /^Not sent/);
});

test('rooms: switch without reloading, recent list, and back', async () => {
  const other = `${room}-2`;
  await pa.evaluate(() => { window.__sameDocument = true; });
  await joinRoom(pa, other);
  assert.equal(await messages(pa, 'hello bob').count(), 0);
  await send(pa, 'in the other room');
  await pa.locator('li.msg[data-status="saved"]', { hasText: 'in the other room' }).waitFor();
  await pa.locator(`#room-list button[data-room="${room}"]`).click();
  await pa.locator('#room-title', { hasText: `#${room}` }).waitFor();
  await online(pa);
  await messages(pa, 'hello bob').waitFor();
  assert.equal(await messages(pa, 'in the other room').count(), 0);
  assert.equal(await messages(pb, 'in the other room').count(), 0);
  assert.equal(await pa.evaluate(() => window.__sameDocument), true, 'no reload');
  assert.equal(await pa.locator(`#room-list button[data-room="${room}"]`).getAttribute('aria-current'), 'true');
  // History carries the ticks of Alice's earlier messages.
  await pa.locator('li.msg[data-status="seen"]', { hasText: 'hello bob' }).waitFor();
});

test('user content renders as text (XSS)', async () => {
  const payload = '<img src=x onerror=alert(1)>';
  await send(pa, payload);
  const atBob = messages(pb, payload);
  await atBob.waitFor();
  assert.equal(await atBob.locator('.body').textContent(), payload);
  assert.equal(await pb.locator('#messages img').count(), 0);
  assert.equal(await pa.locator('#messages img').count(), 0);
  await new Promise((r) => setTimeout(r, 300));
  for (const p of [alice, bob, carol]) assert.deepEqual(p.problems, []);
});
