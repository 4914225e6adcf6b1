// The everyday features of the chat page: messages grouped by sender, day
// separators, the full timestamp on hover and focus, clickable http(s) links
// (and nothing else), "jump to latest", the tab title's count of messages
// that came while the tab was hidden, desktop notifications for mentions and
// private messages (asked for only on a click, muted per room). Each test has
// its own people and room.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BASE_URL, launch, person, uniqueName, uniqueRoom, signup, send, messages, waitFor, shot, people,
  personButton, roomHeading, burst, counter, setHidden,
} from './helpers.mjs';
import { dayLabel } from '../web/js/format.js';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const logOf = (page) => page.getByRole('log', { name: 'Messages' });

/** The text of every day separator (a heading in the log), top to bottom. */
const dayHeadings = (page) => logOf(page).getByRole('heading', { level: 3 }).allTextContents();

test('a sender\'s run shows the name once; "Today" above today\'s messages; the full time on hover and focus', async (t) => {
  const [a, b] = await people(t, browser, uniqueRoom('group'), ['alice', 'bob']);
  const pb = b.page;
  for (const text of ['first of a run', 'second of a run', 'third of a run']) await send(a.page, text);
  await send(pb, 'bob answers');
  await send(a.page, 'alice again');
  await messages(pb, 'alice again').waitFor();
  const group = async (text) => messages(pb, text).getAttribute('data-group');
  assert.deepEqual(
    [await group('first of a run'), await group('second of a run'), await group('third of a run'),
      await group('bob answers'), await group('alice again')],
    ['start', 'cont', 'cont', 'start', 'start'],
  );
  // The name is out of sight in a continued message (still there for screen readers).
  const nameBox = async (text) => messages(pb, text).locator('.sender').boundingBox();
  assert.ok((await nameBox('first of a run')).width > 10);
  assert.ok((await nameBox('second of a run')).width <= 1, 'the name is shown once per run');
  assert.equal(await messages(pb, 'second of a run').locator('.sender').textContent(), a.name);
  // One separator, "Today", above the first message.
  assert.deepEqual(await dayHeadings(pb), ['Today']);
  // The full timestamp: the title (hover, and the focused time's description) has the date and the seconds.
  const time = messages(pb, 'second of a run').locator('time');
  const iso = await time.getAttribute('datetime');
  assert.ok(!Number.isNaN(Date.parse(iso)));
  const title = await time.getAttribute('title');
  assert.match(title, new RegExp(String(new Date(iso).getFullYear())));
  assert.match(title, /\d{1,2}:\d{2}:\d{2}/);
  // Keyboard: the times are one tab stop (the newest), the arrows move between them.
  const newest = messages(pb, 'alice again').locator('time');
  assert.equal(await newest.getAttribute('tabindex'), '0');
  assert.equal(await time.getAttribute('tabindex'), '-1');
  await newest.focus();
  for (let i = 0; i < 3; i++) await pb.keyboard.press('ArrowUp');
  assert.equal(await pb.evaluate(() => document.activeElement.closest('li').querySelector('.body').textContent), 'second of a run');
  assert.equal(await time.getAttribute('tabindex'), '0');
  assert.equal(await pb.evaluate(() => getComputedStyle(document.activeElement, '::after').content),
    JSON.stringify(title), 'the focused time shows its full timestamp');
  await shot(pb, 'groups-and-full-time');
  assert.deepEqual(b.problems, []);
});

test('day separators: messages from history dated two days ago, yesterday and today', async (t) => {
  const room = uniqueRoom('days');
  const [a] = await people(t, browser, room, ['alice']);
  for (const text of ['old one', 'old two', 'yesterday one', 'today one']) await send(a.page, text);
  await messages(a.page, 'today one').and(a.page.locator('[data-status]:not([data-status="pending"])')).waitFor();
  // The server dates messages itself, so the history a new page receives is
  // re-dated on the way (a real socket to the real server, frames edited):
  // "old" two days ago, "yesterday" yesterday, at local noon.
  const noon = new Date(); noon.setHours(12, 0, 0, 0);
  const when = { 'old one': -2, 'old two': -2, 'yesterday one': -1 };
  const redate = (m) => {
    const days = when[m.content];
    if (days === undefined) return m;
    const d = new Date(noon); d.setDate(d.getDate() + days);
    if (m.content === 'old two') d.setMinutes(1);
    return { ...m, ts: d.toISOString() };
  };
  const bob = await person(browser);
  t.after(() => bob.context.close().catch(() => {}));
  const pb = await bob.context.newPage();
  let redated = 0;
  await pb.routeWebSocket(/\/ws/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => server.send(m));
    server.onMessage((data) => {
      if (typeof data !== 'string') { ws.send(data); return; }
      const lines = data.split('\n').map((line) => {
        const f = JSON.parse(line);
        if (f.type !== 'history' || !Array.isArray(f.messages)) return line;
        redated += 1;
        return JSON.stringify({ ...f, messages: f.messages.map(redate) });
      });
      ws.send(lines.join('\n'));
    });
  });
  await pb.goto(`${BASE_URL}/#${room}`);
  await signup(pb, uniqueName('bob'));
  await roomHeading(pb, room).waitFor();
  await messages(pb, 'today one').waitFor();
  assert.ok(redated > 0, 'the history went through the route');
  const twoDaysAgo = new Date(noon); twoDaysAgo.setDate(twoDaysAgo.getDate() - 2);
  assert.deepEqual(await dayHeadings(pb), [dayLabel(twoDaysAgo.getTime(), Date.now()), 'Yesterday', 'Today']);
  // Each separator sits right above its day's first message; a day starts a new group.
  const order = await logOf(pb).locator('li.day-sep, li.msg').evaluateAll((lis) => lis.map((li) => (
    li.classList.contains('day-sep') ? `# ${li.textContent}` : `${li.querySelector('.body').textContent} (${li.dataset.group})`)));
  assert.deepEqual(order, [
    `# ${dayLabel(twoDaysAgo.getTime(), Date.now())}`, 'old one (start)', 'old two (cont)',
    '# Yesterday', 'yesterday one (start)', '# Today', 'today one (start)']);
  await shot(pb, 'day-separators');
});

test('links: http(s) is a link that opens in a new tab without an opener; javascript: and data: stay text', async (t) => {
  const [a, b] = await people(t, browser, uniqueRoom('links'), ['alice', 'bob']);
  const pb = b.page;
  await b.ctx.route('https://example.com/**', (route) => route.fulfill({ contentType: 'text/html', body: '<title>elsewhere</title>ok' }));
  const text = 'see https://example.com/page?q=1, not javascript:alert(1) nor data:text/html,<script>alert(2)</script>';
  await send(a.page, text);
  const msg = messages(pb, text);
  await msg.waitFor();
  const links = msg.getByRole('link');
  assert.equal(await links.count(), 1, 'only the https URL is a link');
  const link = msg.getByRole('link', { name: 'https://example.com/page?q=1' });
  assert.equal(await link.getAttribute('href'), 'https://example.com/page?q=1');
  assert.equal(await link.getAttribute('target'), '_blank');
  assert.equal(await link.getAttribute('rel'), 'noopener noreferrer');
  // A link only in form: a message that is all `javascript:` has no link at all.
  await send(a.page, 'javascript:alert(document.cookie)');
  const js = messages(pb, 'javascript:alert(document.cookie)');
  await js.waitFor();
  assert.equal(await js.getByRole('link').count(), 0);
  assert.equal(await js.locator('a').count(), 0);
  // Clicking opens the page in a new tab, with no way back to ours.
  const [popup] = await Promise.all([b.ctx.waitForEvent('page'), link.click()]);
  await popup.waitForLoadState();
  assert.equal(popup.url(), 'https://example.com/page?q=1');
  assert.equal(await popup.evaluate(() => window.opener), null);
  await popup.close();
  assert.deepEqual(b.problems, []);
  assert.deepEqual(a.problems, []);
});

test('"jump to latest" appears whenever the list is scrolled up and hides at the bottom', async (t) => {
  const [a, b] = await people(t, browser, uniqueRoom('jump'), ['alice', 'bob']);
  const pb = b.page;
  await burst(a.page, 'line', 40);
  await messages(pb, 'line 39').waitFor();
  const jump = pb.getByRole('button', { name: 'Jump to the latest messages' });
  assert.equal(await jump.isVisible(), false, 'at the bottom: no button');
  await logOf(pb).evaluate((s) => { s.scrollTop = 0; });
  await jump.waitFor();
  await jump.click();
  await jump.waitFor({ state: 'hidden' });
  assert.equal(await logOf(pb).evaluate((s) => s.scrollHeight - s.scrollTop - s.clientHeight < 48), true);
  // Scrolled up and something new below: the count, then back to the bottom.
  await logOf(pb).evaluate((s) => { s.scrollTop = 0; });
  await jump.waitFor();
  await send(a.page, 'one more');
  const more = pb.getByRole('button', { name: '1 new message below' });
  await more.waitFor();
  await logOf(pb).evaluate((s) => { s.scrollTop = s.scrollHeight; });
  await more.waitFor({ state: 'hidden' });
  await jump.waitFor({ state: 'hidden' });
  assert.deepEqual(b.problems, []);
});

test('notifications: asked for only on a click, then for a mention or a private message while hidden; muted per room; the title counts while hidden', async (t) => {
  const room = uniqueRoom('notify');
  const alice = await person(browser);
  t.after(() => alice.context.close().catch(() => {}));
  await alice.context.grantPermissions(['notifications'], { origin: BASE_URL });
  // Records each permission request (with whether a user gesture was active)
  // and each notification the page makes, and still makes them.
  await alice.context.addInitScript(() => {
    const Real = window.Notification;
    window.__asks = [];
    window.__notes = [];
    class Recorded extends Real {
      constructor(title, opts = {}) {
        window.__notes.push({ title, body: opts.body });
        super(title, opts);
      }
      static get permission() { return Real.permission; }
      static requestPermission(...args) {
        window.__asks.push({ gesture: navigator.userActivation.isActive });
        return Real.requestPermission(...args);
      }
    }
    window.Notification = Recorded;
  });
  const pa = await alice.context.newPage();
  await pa.goto(`${BASE_URL}/#${room}`);
  const aName = uniqueName('alice');
  await signup(pa, aName);
  await roomHeading(pa, room).waitFor();
  const [b] = await people(t, browser, room, ['bob']);
  await personButton(pa, b.name).waitFor();
  const asks = () => pa.evaluate(() => window.__asks);
  const notes = () => pa.evaluate(() => window.__notes.map((n) => n.title));
  const toggle = pa.getByRole('button', { name: 'Desktop notifications' });
  assert.equal(await toggle.getAttribute('aria-pressed'), 'false', 'off by default');

  // Hidden and mentioned before any click: nothing asked, nothing shown;
  // the title counts, and coming back says how many and clears it.
  await setHidden(pa, true);
  await send(b.page, `early @${aName}`);
  await send(b.page, 'and another');
  await messages(pa, 'and another').waitFor({ state: 'attached' });
  await waitFor(async () => (await pa.title()) === `(2) #${room} · hubbub`, { what: 'the title count' });
  assert.deepEqual(await asks(), []);
  assert.deepEqual(await notes(), []);
  await setHidden(pa, false);
  await waitFor(async () => (await pa.title()) === `#${room} · hubbub`, { what: 'the title reset' });
  await pa.locator('#announcer').getByText('2 new messages arrived while this tab was in the background').waitFor({ state: 'attached' });
  assert.equal(await pa.locator('#announcer').getAttribute('aria-live'), 'polite');
  // The mention is highlighted, in words too.
  const early = messages(pa, `early @${aName}`);
  assert.equal(await early.getByText('mentions you').isVisible(), true);
  assert.equal(await early.locator('mark').textContent(), `@${aName}`);
  assert.equal(await messages(pa, 'and another').getByText('mentions you').isVisible(), false);

  // The click asks (inside the gesture) and turns them on.
  await toggle.click();
  await pa.getByRole('button', { name: 'Desktop notifications', pressed: true }).waitFor();
  assert.deepEqual(await asks(), [{ gesture: true }]);

  await setHidden(pa, true);
  await send(b.page, 'nothing for alice');
  await send(b.page, `hey @${aName.toUpperCase()}, look`);
  await personButton(b.page, aName).click();
  await send(b.page, 'just between us');
  await waitFor(async () => (await counter(pa, 'notifications')) >= 2, { what: 'two notifications' });
  assert.deepEqual(await notes(), [`${b.name} mentioned you in #${room}`, `Private message from ${b.name}`]);
  assert.deepEqual(await pa.evaluate(() => window.__notes.map((n) => n.body)),
    [`hey @${aName.toUpperCase()}, look`, 'just between us']);

  // Muted: nothing from this room, even while hidden.
  await setHidden(pa, false);
  await pa.getByRole('button', { name: 'Mute this room', pressed: false }).click();
  await pa.getByRole('button', { name: 'Mute this room', pressed: true }).waitFor();
  await setHidden(pa, true);
  await send(b.page, 'muted private');
  await b.page.getByRole('button', { name: /^Cancel/ }).click();
  await send(b.page, `muted @${aName}`);
  await messages(pa, `muted @${aName}`).waitFor({ state: 'attached' });
  // Unmuted and visible: still nothing (only while hidden).
  await setHidden(pa, false);
  await pa.getByRole('button', { name: 'Mute this room', pressed: true }).click();
  await send(b.page, `visible @${aName}`);
  await messages(pa, `visible @${aName}`).waitFor();
  assert.equal(await counter(pa, 'notifications'), 2);
  assert.equal((await notes()).length, 2);
  assert.deepEqual(await asks(), [{ gesture: true }], 'asked once, on the click');
  await shot(pa, 'mention-and-notifications');
  assert.deepEqual(alice.problems, []);
});
