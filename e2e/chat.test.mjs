// Two and three people chatting: messages, ticks, typing, private messages,
// commands, and user content that must stay text. Each test has its own
// people (browser contexts) and room: one failing leaves the others alone.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  launch, person, uniqueName, uniqueRoom, signup, joinRoom, send, messages, mine, waitFor, shot, recordTicks,
  online, people, personButton, roomHeading, messageBox, log,
} from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('people sign up, join a room and chat', async (t) => {
  const room = uniqueRoom('room');
  const alice = await person(browser);
  t.after(() => alice.context.close());
  const pa = await alice.page('/');
  await pa.getByRole('heading', { name: 'Log in or sign up' }).waitFor();
  await shot(pa, 'login');
  const a = uniqueName('alice');
  await signup(pa, a);
  await joinRoom(pa, room);

  const bob = await person(browser);
  t.after(() => bob.context.close());
  const pb = await bob.page(`/#${room}`); // a room link works as well as the join form
  const b = uniqueName('bob');
  await signup(pb, b);
  await roomHeading(pb, room).waitFor();
  await online(pb);

  // Presence: each sees the other online.
  await personButton(pa, b).waitFor();
  await personButton(pb, a).waitFor();

  await send(pa, 'hello bob');
  await messages(pb, 'hello bob').waitFor();
  await send(pb, 'hi alice\nsecond line');
  await messages(pa, 'hi alice\nsecond line').waitFor();
  assert.equal(await messages(pa, 'hello bob').count(), 1);
  assert.equal(await messages(pb, 'hi alice\nsecond line').count(), 1);
  // Both sides list the room as recent, the current one marked.
  const recent = pa.getByRole('navigation', { name: 'Rooms and people' }).getByRole('button', { name: `#${room}`, exact: true });
  assert.equal(await recent.getAttribute('aria-current'), 'true');
  assert.deepEqual(alice.problems, []);
  assert.deepEqual(bob.problems, []);
});

test('ticks go pending → saved ✓ → delivered ✓✓ → seen', async (t) => {
  const [a, b] = await people(t, browser, uniqueRoom('ticks'), ['alice', 'bob']);
  await recordTicks(a.page);
  await send(a.page, 'tick tock');
  const sent = messages(a.page, 'tick tock');
  await sent.waitFor();
  await mine(a.page, 'tick tock', ['seen']).waitFor({ timeout: 10000 });
  const id = await sent.getAttribute('data-id');
  const seq = await a.page.evaluate((i) => window.__ticks[i], id);
  const rank = { pending: 0, saved: 1, delivered: 2, seen: 3 };
  assert.equal(seq[0], 'pending', `sequence ${seq}`);
  assert.equal(seq[seq.length - 1], 'seen', `sequence ${seq}`);
  for (let i = 1; i < seq.length; i++) assert.ok(rank[seq[i]] > rank[seq[i - 1]], `never backwards: ${seq}`);
  assert.ok(seq.includes('delivered'), `✓✓ before seen: ${seq}`);
  // A text alternative, not only colour.
  const tick = sent.locator('.tick');
  assert.equal(await tick.locator('.tick-text').textContent(), 'Seen');
  assert.equal(await tick.locator('.tick-icon').getAttribute('aria-hidden'), 'true');
  // Bob's copy of Alice's message carries no tick of his own.
  assert.equal(await messages(b.page, 'tick tock').locator('.tick:not([hidden])').count(), 0);
  await shot(a.page, 'chat');
});

test('typing indicator appears and disappears', async (t) => {
  const [a, b] = await people(t, browser, uniqueRoom('typing'), ['alice', 'bob']);
  const typing = a.page.getByText(`${b.name} is typing…`);
  const box = messageBox(b.page);
  await box.click();
  await box.pressSequentially('I am wri', { delay: 30 });
  await typing.waitFor({ timeout: 5000 });
  // Sending ends it at once.
  await box.pressSequentially('ting', { delay: 20 });
  await box.press('Enter');
  await messages(a.page, 'I am writing').waitFor();
  await typing.waitFor({ state: 'detached', timeout: 5000 });
  // Stopping without sending ends it too (idle stop or the 6 s expiry).
  await box.pressSequentially('hmm', { delay: 30 });
  await typing.waitFor({ timeout: 5000 });
  await typing.waitFor({ state: 'detached', timeout: 9000 });
});

test('a private message reaches only its target', async (t) => {
  const [a, b, c] = await people(t, browser, uniqueRoom('pm'), ['alice', 'bob', 'carol']);
  await personButton(a.page, b.name).click();
  await a.page.getByText(`Private message to ${b.name}`).waitFor();
  await send(a.page, 'psst, just for bob');
  const atBob = messages(b.page, 'psst, just for bob');
  await atBob.waitFor();
  assert.match(await atBob.getAttribute('class'), /\bprivate\b/);
  assert.match(await atBob.locator('.pm-label').textContent(), /private to you/);
  await mine(a.page, 'psst, just for bob', ['seen']).waitFor();
  assert.match(await messages(a.page, 'psst, just for bob').locator('.pm-label').textContent(), new RegExp(`private to ${b.name}`));
  // Escape leaves private mode.
  await messageBox(a.page).press('Escape');
  await a.page.getByText(`Private message to ${b.name}`).waitFor({ state: 'hidden' });
  // The /msg command does the same.
  await send(a.page, `/msg ${b.name} second secret`);
  await messages(b.page, 'second secret').waitFor();
  // A public message afterwards: when Carol has it she would have had the others.
  await send(a.page, 'public again');
  await messages(c.page, 'public again').waitFor();
  await messages(b.page, 'public again').waitFor();
  assert.equal(await log(c.page).filter({ hasText: 'psst' }).count(), 0);
  assert.equal(await log(c.page).filter({ hasText: 'second secret' }).count(), 0);
  assert.equal(await messages(a.page, 'second secret').count(), 1);
  await shot(b.page, 'private');
});

test('commands pass through; system lines show', async (t) => {
  const [a, b] = await people(t, browser, uniqueRoom('cmd'), ['alice', 'bob']);
  await send(a.page, '/shrug');
  await messages(b.page, '¯\\_(ツ)_/¯').waitFor();
  await messages(a.page, '¯\\_(ツ)_/¯').waitFor();
  await send(a.page, '/ping');
  await log(a.page).filter({ hasText: 'pong' }).waitFor();
  await send(a.page, '/nosuchcommand');
  await log(a.page).filter({ hasText: /^Error: / }).first().waitFor();
  assert.equal(await messages(a.page, '/nosuchcommand').count(), 0);
  // A private message to someone who never joined fails visibly, in words.
  await send(a.page, '/msg nobody_here_zz are you there');
  const failed = mine(a.page, 'are you there', ['failed']);
  await failed.waitFor();
  assert.match(await failed.locator('.tick-text').textContent(), /^Not sent/);
});

test('rooms: switch without reloading, recent list, and back', async (t) => {
  const room = uniqueRoom('switch');
  const [a, b] = await people(t, browser, room, ['alice', 'bob']);
  const pa = a.page;
  await send(pa, 'hello bob');
  await mine(pa, 'hello bob', ['seen']).waitFor();
  const other = `${room}-2`;
  await pa.evaluate(() => { window.__sameDocument = true; });
  await joinRoom(pa, other);
  assert.equal(await messages(pa, 'hello bob').count(), 0);
  await send(pa, 'in the other room');
  await mine(pa, 'in the other room').waitFor();
  const nav = pa.getByRole('navigation', { name: 'Rooms and people' });
  await nav.getByRole('button', { name: `#${room}`, exact: true }).click();
  await roomHeading(pa, room).waitFor();
  await online(pa);
  await messages(pa, 'hello bob').waitFor();
  assert.equal(await messages(pa, 'in the other room').count(), 0);
  assert.equal(await messages(b.page, 'in the other room').count(), 0);
  assert.equal(await pa.evaluate(() => window.__sameDocument), true, 'no reload');
  assert.equal(await nav.getByRole('button', { name: `#${room}`, exact: true }).getAttribute('aria-current'), 'true');
  // History carries the ticks of Alice's earlier messages.
  await mine(pa, 'hello bob', ['seen']).waitFor();
});

test('user content renders as text (XSS)', async (t) => {
  const [a, b] = await people(t, browser, uniqueRoom('xss'), ['alice', 'bob']);
  const payload = '<img src=x onerror=alert(1)>';
  await send(a.page, payload);
  const atBob = messages(b.page, payload);
  await atBob.waitFor();
  assert.equal(await atBob.locator('.body').textContent(), payload);
  // A message after it has arrived too: anything the payload could have run, it has.
  await send(a.page, 'after the payload');
  await messages(b.page, 'after the payload').waitFor();
  await mine(a.page, 'after the payload').waitFor();
  assert.equal(await b.page.getByRole('log', { name: 'Messages' }).locator('img').count(), 0);
  assert.equal(await a.page.getByRole('log', { name: 'Messages' }).locator('img').count(), 0);
  for (const p of [a, b]) assert.deepEqual(p.problems, []);
});
