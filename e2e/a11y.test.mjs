// Accessibility: axe-core finds no serious or critical violations on the
// login page and a busy chat (light and dark), and the chat works from the keyboard.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  AXE_PATH, launch, person, uniqueName, signup, joinRoom, send, messages, shot, online,
} from './helpers.mjs';

let browser;
let alice; let bob;
let pa; let pb;
const room = uniqueName('a11y').replace(/_/g, '-');
const names = { a: uniqueName('alice'), b: uniqueName('bob') };

before(async () => {
  browser = await launch();
  alice = await person(browser);
  bob = await person(browser);
});

after(async () => {
  await browser?.close();
});

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

test('login page: no serious or critical axe violations', async () => {
  pa = await alice.page('/');
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

test('keyboard only: sign up, join, send, newline, private and Escape', async () => {
  await pa.getByLabel('Username').fill(names.a);
  await pa.getByLabel('Password').fill('correct horse battery');
  // Tab from the password to the buttons: Log in, then Sign up.
  await pa.getByLabel('Password').focus();
  await pa.keyboard.press('Tab');
  await pa.keyboard.press('Tab');
  assert.equal(await pa.evaluate(() => document.activeElement.textContent), 'Sign up');
  await pa.keyboard.press('Enter');
  await pa.locator('#me-name', { hasText: names.a }).waitFor();
  await online(pa);
  await joinRoom(pa, room);

  pb = await bob.page(`/#${room}`);
  await signup(pb, names.b);
  await pa.locator(`#people-list button[data-user="${names.b}"]`).waitFor();

  // The composer has focus after joining; Shift+Enter adds a line, Enter sends.
  await pa.getByLabel('Message', { exact: true }).focus();
  await pa.keyboard.type('line one');
  await pa.keyboard.press('Shift+Enter');
  await pa.keyboard.type('line two');
  await pa.keyboard.press('Enter');
  await messages(pb, 'line one\nline two').waitFor();
  assert.equal(await pa.getByLabel('Message', { exact: true }).inputValue(), '');

  // Private mode from the people list with the keyboard, Escape leaves it.
  await pa.locator(`#people-list button[data-user="${names.b}"]`).focus();
  await pa.keyboard.press('Enter');
  await pa.locator('#pm-chip').waitFor();
  assert.equal(await pa.evaluate(() => document.activeElement.id), 'composer-input');
  await pa.keyboard.press('Escape');
  await pa.locator('#pm-chip').waitFor({ state: 'hidden' });

  // Focus is visible: a focused button gets an outline.
  await pa.getByRole('button', { name: 'Log out' }).focus();
  await pa.keyboard.press('Shift+Tab');
  await pa.keyboard.press('Tab');
  const outline = await pa.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, 'none');
});

test('a busy chat: no serious or critical axe violations, light and dark', async () => {
  await send(pb, 'hello from bob');
  await send(pa, 'and a reply');
  await pb.locator(`#people-list button[data-user="${names.a}"]`).click();
  await send(pb, 'a private word');
  await messages(pa, 'a private word').waitFor();
  await pa.locator('li.msg[data-status="seen"]', { hasText: 'and a reply' }).waitFor();
  await send(pa, '/ping');
  await pa.locator('li.system', { hasText: 'pong' }).waitFor();
  // The polite live region announced Bob's message.
  await pa.locator('#announcer', { hasText: `${names.b}: hello from bob` }).waitFor();
  assert.equal(await pa.locator('#announcer').getAttribute('aria-live'), 'polite');
  await axe(pa, 'chat (light)');
  await pa.emulateMedia({ colorScheme: 'dark' });
  await axe(pa, 'chat (dark)');
  await shot(pa, 'chat-dark');
  await pa.emulateMedia({ colorScheme: 'light' });
  assert.deepEqual(alice.problems, []);
});
