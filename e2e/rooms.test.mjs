// One socket for all the user's rooms: the room list's badges and mention
// markers rise live for rooms not shown, switching rooms is instant (no new
// socket, no new welcome), the read position moves when a room is shown
// (its badge clears, and with a server that syncs read positions, in the
// user's other tabs too), and a mention in a room not shown notifies while
// the tab is hidden.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE_URL, launch, person, uniqueName, uniqueRoom, signup, send, messages, waitFor, shot, people,
  roomHeading, joinRoom, counter, setHidden, online, ownServer, log, personButton, mine,
} from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** The room list's button for `room`, by its whole accessible name ("#r, 2 unread, 1 mention"). */
const roomButton = (page, name) => page.getByRole('navigation', { name: 'Rooms and people' })
  .getByRole('button', typeof name === 'string' ? { name, exact: true } : { name });

// Counts the page's WebSocket objects and their opens, and records the
// notifications it makes (and still makes them).
function instrument() {
  window.__sockets = [];
  const RealWS = window.WebSocket;
  window.WebSocket = class extends RealWS {
    constructor(url, ...rest) {
      super(url, ...rest);
      const rec = { url: String(url), opened: false };
      window.__sockets.push(rec);
      this.addEventListener('open', () => { rec.opened = true; });
    }
  };
  if (window.Notification) {
    const Real = window.Notification;
    window.__notes = [];
    window.Notification = class extends Real {
      constructor(title, opts = {}) { window.__notes.push(title); super(title, opts); }
      static get permission() { return Real.permission; }
      static requestPermission(...a) { return Real.requestPermission(...a); }
    };
  }
}

const sockets = (page) => page.evaluate(() => window.__sockets.map((s) => s.url));

test('rooms on one socket: badges and mentions rise live, switching does not reconnect, showing a room reads it, a mention elsewhere notifies while hidden', async (t) => {
  const roomA = uniqueRoom('ra');
  const roomB = uniqueRoom('rb');
  const alice = await person(browser);
  t.after(() => alice.context.close().catch(() => {}));
  await alice.context.grantPermissions(['notifications'], { origin: BASE_URL });
  await alice.context.addInitScript(instrument);
  const pa = await alice.context.newPage();
  await pa.goto(`${BASE_URL}/#${roomA}`);
  const aName = uniqueName('alice');
  await signup(pa, aName);
  await roomHeading(pa, roomA).waitFor();
  const [bob] = await people(t, browser, roomA, ['bob']);
  await send(pa, 'alice was here');
  await messages(bob.page, 'alice was here').waitFor();

  // Room B joined by name: subscribed on the same socket.
  await joinRoom(pa, roomB);
  await send(pa, 'first in b');
  await messages(pa, 'first in b').waitFor();
  const serverReads = await pa.evaluate(async () => (await fetch('/api/rooms')).ok);

  // A second tab of Alice's, showing room B (for the read sync below).
  const pa2 = await alice.context.newPage();
  await pa2.goto(`${BASE_URL}/#${roomB}`);
  await roomHeading(pa2, roomB).waitFor();
  await online(pa2);
  await roomButton(pa2, `#${roomA}`).waitFor();

  // A message in A (not shown) raises A's badge, live.
  await send(bob.page, 'news in a');
  await roomButton(pa, `#${roomA}, 1 unread`).waitFor();
  const btnA = roomButton(pa, `#${roomA}, 1 unread`);
  assert.equal(await btnA.locator('.room-badge').textContent(), '1');
  assert.equal(await btnA.locator('.room-badge').isVisible(), true);
  assert.equal(await btnA.locator('.room-mention').isVisible(), false);
  // A mention of Alice: the mention marker too, in words in the name.
  await send(bob.page, `look @${aName}`);
  const mentioned = roomButton(pa, `#${roomA}, 2 unread, 1 mention`);
  await mentioned.waitFor();
  assert.equal(await mentioned.locator('.room-mention').isVisible(), true);
  assert.match(await mentioned.getAttribute('class'), /has-mention/);
  assert.equal(await roomButton(pa, `#${roomB}`).getAttribute('aria-current'), 'true');
  // The total is in the tab title; the rise is said politely, once for the burst.
  await waitFor(async () => (await pa.title()) === `(2) #${roomB} · hubbub`, { what: 'the title count' });
  await pa.locator('#announcer').getByText(`New messages in #${roomA}, 2 unread, 1 mention`).waitFor({ state: 'attached' });
  await roomButton(pa2, `#${roomA}, 2 unread, 1 mention`).waitFor();
  if (serverReads) {
    // A page loaded now gets the counts from GET /api/rooms (its first page
    // of each room counts nothing itself).
    const pa3 = await alice.context.newPage();
    await pa3.goto(`${BASE_URL}/#${roomB}`);
    await roomHeading(pa3, roomB).waitFor();
    await roomButton(pa3, `#${roomA}, 2 unread, 1 mention`).waitFor();
    await pa3.close();
  }
  await shot(pa, 'room-list-badges');

  // Notifications on (a click), the tab hidden: a mention in A notifies.
  await pa.getByRole('button', { name: 'Desktop notifications' }).click();
  await pa.getByRole('button', { name: 'Desktop notifications', pressed: true }).waitFor();
  await setHidden(pa, true);
  await send(bob.page, `again @${aName}`);
  await waitFor(async () => (await counter(pa, 'notifications')) >= 1, { what: 'a notification' });
  assert.deepEqual(await pa.evaluate(() => window.__notes), [`${bob.name} mentioned you in #${roomA}`]);
  await roomButton(pa, `#${roomA}, 3 unread, 2 mentions`).waitFor();
  await setHidden(pa, false);

  // Switching to A: its messages at once, from the same socket.
  assert.equal((await sockets(pa)).length, 1, 'one socket so far');
  await roomButton(pa, `#${roomA}, 3 unread, 2 mentions`).click();
  await roomHeading(pa, roomA).waitFor();
  await messages(pa, `again @${aName}`).waitFor();
  await messages(pa, 'alice was here').waitFor();
  assert.equal(await messages(pa, 'first in b').count(), 0);
  // Shown and on screen: read, the badge clears (here, and in the other tab
  // when the server syncs read positions).
  await roomButton(pa, `#${roomA}`).waitFor();
  assert.equal(await roomButton(pa, `#${roomA}`).getAttribute('aria-current'), 'true');
  await waitFor(async () => (await pa.title()) === `#${roomA} · hubbub`, { what: 'the title without a count' });
  if (serverReads) await roomButton(pa2, `#${roomA}`).waitFor();
  else t.diagnostic('this server has no GET /api/rooms: the other tab\'s read sync is not checked');

  // And back to B: its buffer is still there; still one socket, one welcome.
  await roomButton(pa, `#${roomB}`).click();
  await roomHeading(pa, roomB).waitFor();
  await messages(pa, 'first in b').waitFor();
  await send(pa, 'second in b');
  await messages(pa, 'second in b').waitFor();
  const urls = await sockets(pa);
  assert.equal(urls.length, 1, `one WebSocket for all rooms: ${urls.join(' ')}`);
  assert.equal(new URL(urls[0]).searchParams.get('multi'), '1');
  assert.equal(await counter(pa, 'welcomes'), 1, 'never reconnected');
  for (const p of [alice, bob]) assert.deepEqual(p.problems, []);
});

const needsBin = { skip: process.env.HUBBUB_BIN ? false : 'needs HUBBUB_BIN (run.sh sets it)' };

test('over the rooms-per-connection limit: the shown room is live, the one shown longest ago gives way, and resumes exactly when shown again', needsBin, async (t) => {
  const base = await ownServer(t, ['--max-rooms-per-connection', '2']);
  const [roomA, roomB, roomC] = ['la', 'lb', 'lc'].map((p) => uniqueRoom(p));
  const open = async (prefix) => {
    const ctx = await browser.newContext({ viewport: { width: 1100, height: 720 } });
    t.after(() => ctx.close().catch(() => {}));
    const page = await ctx.newPage();
    await page.goto(`${base}/#${roomA}`);
    const name = uniqueName(prefix);
    await signup(page, name);
    await roomHeading(page, roomA).waitFor();
    return { page, name };
  };
  const alice = await open('alice');
  const bob = await open('bob');
  const pa = alice.page;
  // Alice in three rooms, two allowed: joining C (shown) takes the place of
  // A (shown longest ago); the server's refusal is handled, not shown.
  await joinRoom(pa, roomB);
  await joinRoom(pa, roomC);
  await joinRoom(bob.page, roomC);
  await personButton(pa, bob.name).waitFor();
  await send(bob.page, 'live in c');
  await messages(pa, 'live in c').waitFor();
  // Bob talks in A while Alice's socket is not subscribed to it.
  const nav = bob.page.getByRole('navigation', { name: 'Rooms and people' });
  await nav.getByRole('button', { name: new RegExp(`^#${roomA}`) }).click();
  await roomHeading(bob.page, roomA).waitFor();
  await send(bob.page, 'said in a meanwhile');
  await mine(bob.page, 'said in a meanwhile').waitFor();
  // Shown again, A resumes from its cursor: the message is there, once.
  await roomButton(pa, new RegExp(`^#${roomA}`)).click();
  await roomHeading(pa, roomA).waitFor();
  await messages(pa, 'said in a meanwhile').waitFor();
  assert.equal(await messages(pa, 'said in a meanwhile').count(), 1);
  await send(bob.page, 'live in a');
  await messages(pa, 'live in a').waitFor();
  assert.equal(await log(pa).filter({ hasText: 'rooms per connection' }).count(), 0, 'no error shown');
  assert.equal(await counter(pa, 'welcomes'), 1, 'one socket throughout');
});
