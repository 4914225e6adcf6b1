// The room list on one socket, continued: system lines (joins, leaves) and
// the people list belong to their room and show when it is shown; the list
// re-sorts by activity (newest first) but holds still while the user is in
// it (pointer over it or keyboard focus on it); leaving a room unsubscribes,
// removes it, shows another, and a reload does not bring it back until the
// user joins it again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE_URL, launch, person, uniqueName, uniqueRoom, signup, send, messages, waitFor, people,
  roomHeading, joinRoom, counter, online, log, personButton, mine, escapeRe,
} from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const nav = (page) => page.getByRole('navigation', { name: 'Rooms and people' });
/** The buttons of the list of the user's rooms (the region "Your rooms"), top to bottom. */
const listButtons = (page) => nav(page).getByRole('region', { name: 'Your rooms' }).getByRole('listitem').getByRole('button');
/** The room list's button for `room`, whatever its counts ("#r" or "#r, 2 unread…"). */
const roomButton = (page, room) => nav(page).getByRole('button', { name: new RegExp(`^#${escapeRe(room)}(,|$)`) });
/** The rooms in the list, top to bottom (the list's own buttons, by their rooms). */
const order = (page) => listButtons(page).evaluateAll((bs) => bs.map((b) => b.dataset.room));
const systemLines = (page, text) => log(page).filter({ hasText: new RegExp(`^Notice: ${escapeRe(text)}$`) });

/** Alice signed up in `rooms[0]`, then in the others (joined by name), the last one shown. */
async function alice(t, rooms) {
  const p = await person(browser);
  t.after(() => p.context.close().catch(() => {}));
  const page = await p.page(`/#${rooms[0]}`);
  const name = uniqueName('alice');
  await signup(page, name);
  await roomHeading(page, rooms[0]).waitFor();
  await online(page);
  for (const r of rooms.slice(1)) await joinRoom(page, r);
  return { page, name, problems: p.problems };
}

async function show(page, room) {
  await roomButton(page, room).click();
  await roomHeading(page, room).waitFor();
}

test('system lines and presence belong to their room: a join in A while B is shown shows in A, not B', async (t) => {
  const [roomA, roomB] = [uniqueRoom('sa'), uniqueRoom('sb')];
  const a = await alice(t, [roomA, roomB]);
  const pa = a.page;
  // Bob joins A while Alice looks at B.
  const [bob] = await people(t, browser, roomA, ['bob']);
  const joined = `${bob.name} joined`;
  // Something of A's arrives after the join line (a badge): the line has come too.
  await send(bob.page, 'after my join');
  await roomButton(pa, roomA).and(nav(pa).getByRole('button', { name: /1 unread/ })).waitFor();
  assert.equal(await systemLines(pa, joined).count(), 0, 'A\'s join line is not in B');
  assert.equal(await personButton(pa, bob.name).count(), 0, 'B\'s people list has no Bob');
  // A shown: its join line, after the message that was there before it, and its people.
  await show(pa, roomA);
  await systemLines(pa, joined).waitFor();
  await messages(pa, 'after my join').waitFor();
  await personButton(pa, bob.name).waitFor();
  const items = await log(pa).evaluateAll((lis) => lis.map((li) => li.textContent));
  const at = (s) => items.findIndex((x) => x.includes(s));
  assert.ok(at(joined) < at('after my join'), `the join line before the message after it: ${items.join(' | ')}`);
  // B again: no join line there, no Bob; A again: the line is still there.
  await show(pa, roomB);
  await online(pa);
  await nav(pa).getByRole('button', { name: `${a.name} (you)` }).or(nav(pa).getByText(`${a.name} (you)`)).waitFor();
  assert.equal(await systemLines(pa, joined).count(), 0);
  assert.equal(await personButton(pa, bob.name).count(), 0);
  await show(pa, roomA);
  await systemLines(pa, joined).waitFor();
  // Bob leaves A (closes his page) while Alice looks at B: the leave line waits in A.
  await show(pa, roomB);
  await bob.page.close();
  await send(pa, 'marker in b');
  await mine(pa, 'marker in b').waitFor();
  await show(pa, roomA);
  await systemLines(pa, `${bob.name} left`).waitFor();
  await waitFor(async () => (await personButton(pa, bob.name).count()) === 0, { what: 'Bob gone from A\'s people' });
  assert.deepEqual(a.problems, []);
});

test('the room list re-sorts by activity, newest first, and holds still under the pointer and the keyboard focus', async (t) => {
  const [roomA, roomB, roomC] = [uniqueRoom('oa'), uniqueRoom('ob'), uniqueRoom('oc')];
  const [bob] = await people(t, browser, roomA, ['bob']);
  await joinRoom(bob.page, roomB);
  await joinRoom(bob.page, roomC);
  const a = await alice(t, [roomA, roomB, roomC]);
  const pa = a.page;
  // Alice writes in A, then B, then C: C is the newest.
  for (const r of [roomA, roomB, roomC]) {
    await show(pa, r);
    await send(pa, `alice in ${r}`);
    await mine(pa, `alice in ${r}`).waitFor();
  }
  await pa.mouse.move(900, 650); // away from the list
  await waitFor(async () => (await order(pa)).join() === [roomC, roomB, roomA].join(), { what: 'C, B, A' });

  // A message in the lowest room (A) moves it to the top.
  await show(bob.page, roomA);
  await send(bob.page, 'news in a');
  await roomButton(pa, roomA).and(nav(pa).getByRole('button', { name: /1 unread/ })).waitFor();
  await waitFor(async () => (await order(pa)).join() === [roomA, roomC, roomB].join(), { what: 'A on top' });
  const names = await listButtons(pa).evaluateAll((bs) => bs.map((b) => b.getAttribute('aria-label')));
  assert.deepEqual(names, [`#${roomA}, 1 unread`, `#${roomC}`, `#${roomB}`], 'names unchanged by the move');

  // The pointer over the list: B's news raise its badge, nothing moves; the pointer gone, B goes on top.
  await roomButton(pa, roomC).hover();
  await show(bob.page, roomB);
  await send(bob.page, 'news in b');
  await roomButton(pa, roomB).and(nav(pa).getByRole('button', { name: /1 unread/ })).waitFor();
  assert.deepEqual(await order(pa), [roomA, roomC, roomB], 'held under the pointer');
  await pa.mouse.move(900, 650);
  await waitFor(async () => (await order(pa)).join() === [roomB, roomA, roomC].join(), { what: 'B on top once the pointer left' });

  // Keyboard focus on A's button: C's news move nothing and the focus stays; focus elsewhere, C goes on top.
  await roomButton(pa, roomA).focus();
  await show(bob.page, roomC);
  await send(bob.page, 'news in c');
  await roomButton(pa, roomC).and(nav(pa).getByRole('button', { name: /1 unread/ })).waitFor();
  assert.deepEqual(await order(pa), [roomB, roomA, roomC], 'held under the focus');
  assert.equal(await pa.evaluate(() => document.activeElement.dataset.room), roomA, 'the focus stayed');
  await pa.getByLabel('Message', { exact: true }).focus();
  await waitFor(async () => (await order(pa)).join() === [roomC, roomB, roomA].join(), { what: 'C on top once the focus left' });
  assert.deepEqual(a.problems, []);
});

test('leaving a room: unsubscribed, out of the list, another room shown, and a reload does not bring it back until joined again', async (t) => {
  const [roomA, roomB] = [uniqueRoom('la'), uniqueRoom('lb')];
  const [bob] = await people(t, browser, roomB, ['bob']);
  const a = await alice(t, [roomA, roomB]);
  const pa = a.page;
  await personButton(bob.page, a.name).waitFor();
  await roomButton(pa, roomA).waitFor();
  // A second tab of Alice's, showing B too: it follows (same browser, same user).
  const pa2 = await pa.context().newPage();
  await pa2.goto(`${BASE_URL}/#${roomB}`);
  await roomHeading(pa2, roomB).waitFor();
  await online(pa2);
  await roomButton(pa2, roomA).waitFor();

  await pa.getByRole('button', { name: `Leave #${roomB}`, exact: true }).click();
  await roomHeading(pa, roomA).waitFor();
  await waitFor(async () => (await roomButton(pa, roomB).count()) === 0, { what: 'B out of the list' });
  await pa.locator('#announcer').getByText(`You left #${roomB}. Now in #${roomA}.`).waitFor({ state: 'attached' });
  // The other tab left it too, and shows A.
  await roomHeading(pa2, roomA).waitFor();
  await waitFor(async () => (await roomButton(pa2, roomB).count()) === 0, { what: 'B out of the other tab\'s list' });
  await pa2.locator('#announcer').getByText(`You left #${roomB} in another tab. Now in #${roomA}.`).waitFor({ state: 'attached' });
  // Both sockets unsubscribed B (the same sockets: one welcome each): Bob sees Alice leave.
  await systemLines(bob.page, `${a.name} left`).waitFor();
  assert.equal(await counter(pa2, 'welcomes'), 1);
  await pa2.close();
  await waitFor(async () => (await personButton(bob.page, a.name).count()) === 0, { what: 'Alice gone from B\'s people' });
  assert.equal(await counter(pa, 'welcomes'), 1);
  // Bob's news in B raise nothing at Alice's.
  await send(bob.page, 'after alice left');
  await mine(bob.page, 'after alice left').waitFor();
  // The only room: nothing to leave it for.
  assert.equal(await pa.getByRole('button', { name: `Leave #${roomA}` }).count(), 0);

  // A reload: the server still lists B (GET /api/rooms), the page does not.
  await pa.reload();
  await roomHeading(pa, roomA).waitFor();
  await online(pa);
  await waitFor(async () => (await counter(pa, 'roomLists')) >= 1, { what: 'the room list loaded' });
  assert.deepEqual(await order(pa), [roomA], 'B stays left after a reload');

  // Joined again: listed, shown, live, and a reload (showing A) keeps it.
  await joinRoom(pa, roomB);
  await messages(pa, 'after alice left').waitFor();
  await personButton(bob.page, a.name).waitFor();
  await show(pa, roomA);
  await pa.reload();
  await roomHeading(pa, roomA).waitFor();
  await online(pa);
  await waitFor(async () => (await counter(pa, 'roomLists')) >= 1, { what: 'the room list loaded' });
  await roomButton(pa, roomA).waitFor();
  await roomButton(pa, roomB).waitFor();
  assert.deepEqual(a.problems, []);
});
