// Accessibility: axe-core finds no serious or critical violations on the
// login page and a busy chat (light and dark), and the chat works from the
// keyboard. Each test has its own people and room.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  AXE_PATH, launch, person, uniqueName, uniqueRoom, signup, joinRoom, send, messages, mine, shot, online,
  people, personButton, messageBox, log, roomHeading,
} from './helpers.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

// axe.min.js from node_modules, served under the page's own origin so the
// strict CSP (script-src 'self') lets it run; addScriptTag({ path }) would
// inline it, which that CSP refuses.
async function axe(page, label) {
  await page.route('**/__e2e/axe.min.js', (route) => route.fulfill({ path: AXE_PATH, contentType: 'text/javascript' }));
  await page.addScriptTag({ url: '/__e2e/axe.min.js' });
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 3).map((n) => `${n.target.join(' ')}: ${n.failureSummary}`),
    }));
  });
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad, [], `${label}: ${JSON.stringify(bad, null, 2)}`);
  return result;
}

test('login page: no serious or critical axe violations', async (t) => {
  const alice = await person(browser);
  t.after(() => alice.context.close());
  const pa = await alice.page('/');
  await pa.getByRole('heading', { name: 'Log in or sign up' }).waitFor();
  await axe(pa, 'login (light)');
  await pa.emulateMedia({ colorScheme: 'dark' });
  await axe(pa, 'login (dark)');
  await pa.emulateMedia({ colorScheme: 'light' });
  // A validation error is announced and marked on the field.
  await pa.getByLabel('Username').fill('X');
  await pa.getByRole('button', { name: 'Log in' }).click();
  await pa.getByRole('alert').filter({ hasText: 'Usernames are' }).waitFor();
  assert.equal(await pa.getByLabel('Username').getAttribute('aria-invalid'), 'true');
});

test('keyboard only: sign up, join, send, newline, private and Escape', async (t) => {
  const alice = await person(browser);
  t.after(() => alice.context.close());
  const pa = await alice.page('/');
  const room = uniqueRoom('a11y');
  const a = uniqueName('alice');
  await pa.getByLabel('Username').fill(a);
  await pa.getByLabel('Password').fill('correct horse battery');
  // Tab from the password to the buttons: Log in, then Sign up.
  await pa.getByLabel('Password').focus();
  await pa.keyboard.press('Tab');
  await pa.keyboard.press('Tab');
  assert.equal(await pa.evaluate(() => document.activeElement.textContent), 'Sign up');
  await pa.keyboard.press('Enter');
  await pa.getByText(`Signed in as ${a}`).waitFor();
  await online(pa);
  await joinRoom(pa, room);

  const bob = await person(browser);
  t.after(() => bob.context.close());
  const pb = await bob.page(`/#${room}`);
  const b = uniqueName('bob');
  await signup(pb, b);
  await personButton(pa, b).waitFor();

  // The composer has focus after joining; Shift+Enter adds a line, Enter sends.
  await messageBox(pa).focus();
  await pa.keyboard.type('line one');
  await pa.keyboard.press('Shift+Enter');
  await pa.keyboard.type('line two');
  await pa.keyboard.press('Enter');
  await messages(pb, 'line one\nline two').waitFor();
  assert.equal(await messageBox(pa).inputValue(), '');

  // Private mode from the people list with the keyboard, Escape leaves it.
  await personButton(pa, b).focus();
  await pa.keyboard.press('Enter');
  await pa.getByText(`Private message to ${b}`).waitFor();
  assert.equal(await pa.evaluate(() => document.activeElement.id), 'composer-input');
  await pa.keyboard.press('Escape');
  await pa.getByText(`Private message to ${b}`).waitFor({ state: 'hidden' });

  // Focus is visible: a focused button gets an outline.
  await pa.getByRole('button', { name: 'Log out' }).focus();
  await pa.keyboard.press('Shift+Tab');
  await pa.keyboard.press('Tab');
  const outline = await pa.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, 'none');
});

test('a busy chat: no serious or critical axe violations, light and dark', async (t) => {
  const room = uniqueRoom('a11y');
  const [a, b] = await people(t, browser, room, ['alice', 'bob']);
  const pa = a.page; const pb = b.page;
  // A second room of Alice's with a badge and a mention marker in the room list.
  const other = uniqueRoom('a11y-other');
  const roomBtn = (p, name) => p.getByRole('navigation', { name: 'Rooms and people' }).getByRole('button', { name, exact: true });
  await joinRoom(pa, other);
  await roomBtn(pa, `#${room}`).click();
  await roomHeading(pa, room).waitFor();
  await joinRoom(pb, other);
  await send(pb, `@${a.name} over here`);
  await roomBtn(pa, `#${other}, 1 unread, 1 mention`).waitFor();
  await roomBtn(pb, `#${room}`).click();
  await roomHeading(pb, room).waitFor();
  await send(pb, 'hello from bob');
  // A run of one sender, a link and a mention of Alice: scanned too, with the
  // notification toggles and the day separator.
  await send(pb, `@${a.name} see https://example.com/docs`);
  await send(pa, 'and a reply');
  await personButton(pb, a.name).click();
  await send(pb, 'a private word');
  await messages(pa, 'a private word').waitFor();
  await mine(pa, 'and a reply', ['seen']).waitFor();
  await send(pa, '/ping');
  await log(pa).filter({ hasText: 'pong' }).waitFor();
  // The polite live region announced Bob's message.
  const announcer = pa.locator('#announcer');
  await announcer.getByText(`${b.name}: hello from bob`).waitFor({ state: 'attached' });
  assert.equal(await announcer.getAttribute('aria-live'), 'polite');
  const mention = messages(pa, `@${a.name} see https://example.com/docs`);
  await mention.getByRole('link', { name: 'https://example.com/docs' }).waitFor();
  await mention.getByText('mentions you').waitFor();
  await pa.getByRole('log', { name: 'Messages' }).getByRole('heading', { name: 'Today' }).waitFor();
  await pa.getByRole('button', { name: 'Desktop notifications', pressed: false }).waitFor();
  await pa.getByRole('button', { name: 'Mute this room', pressed: false }).waitFor();
  await axe(pa, 'chat (light)');
  await pa.emulateMedia({ colorScheme: 'dark' });
  await axe(pa, 'chat (dark)');
  await shot(pa, 'chat-dark');
  await pa.emulateMedia({ colorScheme: 'light' });
  assert.deepEqual(a.problems, []);
});
