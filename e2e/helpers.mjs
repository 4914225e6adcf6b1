// Shared setup for the browser tests: Chromium launched as CI.md says,
// helpers for accounts, rooms and messages. web/index.html carries the strict
// CSP itself (a <meta> policy), so every test runs under it; violations are
// collected as problems. (Adding the header with route.fulfill() instead makes
// Chromium treat the page as public and block ws://127.0.0.1 with
// ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS.)
import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const BASE_URL = (process.env.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const here = path.dirname(fileURLToPath(import.meta.url));
export const SHOTS = path.resolve(here, '..', 'docs', 'screenshots');
export const AXE_PATH = path.resolve(here, 'node_modules', 'axe-core', 'axe.min.js');
export const PASSWORD = 'correct horse battery';

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A browser context = one person (its own cookies). `problems` collects CSP
 *  violations, page errors and dialogs (an XSS would open one). */
export async function person(browser, opts = {}) {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: { width: 1100, height: 720 },
    reducedMotion: 'reduce',
    ...opts,
  });
  const problems = [];
  context.on('page', (page) => watch(page, problems));
  return { context, problems, async page(pathAndQuery = '/') {
    const page = await context.newPage();
    await page.goto(BASE_URL + pathAndQuery);
    return page;
  } };
}

function watch(page, problems) {
  page.on('console', (m) => {
    const t = m.text();
    if (/Content Security Policy|Refused to/i.test(t)) problems.push(`csp: ${t}`);
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('dialog', (d) => { problems.push(`dialog: ${d.message()}`); d.dismiss().catch(() => {}); });
}

let seq = 0;
export function uniqueName(prefix) {
  seq += 1;
  const tail = `${Date.now().toString(36)}${seq}${Math.floor(Math.random() * 1e4)}`;
  return `${prefix}_${tail}`.slice(0, 32);
}

export async function signup(page, username, password = PASSWORD) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await page.getByText(`Signed in as ${username}`).waitFor();
  await online(page);
}

export async function login(page, username, password = PASSWORD) {
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByText(`Signed in as ${username}`).waitFor();
  await online(page);
}

/** The connection status (role=status) in a given data-state. */
export function connState(page, state) {
  return page.getByRole('status').and(page.locator(`[data-state="${state}"]`));
}

export async function online(page, timeout = 15000) {
  await connState(page, 'online').waitFor({ timeout });
}

export function roomHeading(page, room) {
  return page.getByRole('heading', { name: `#${room}`, exact: true });
}

export async function joinRoom(page, room) {
  await page.getByLabel('Room name').fill(room);
  await page.getByRole('button', { name: 'Join', exact: true }).click();
  await roomHeading(page, room).waitFor();
  await online(page);
}

/** The button in the people list that starts a private message to `user`. */
export function personButton(page, user) {
  return page.getByRole('button', { name: `${user}: send a private message`, exact: true });
}

export function messageBox(page) {
  return page.getByLabel('Message', { exact: true });
}

export async function send(page, text) {
  const box = messageBox(page);
  await box.fill(text);
  await box.press('Enter');
}

/** The message log's items (messages, system lines, markers). */
export function log(page) {
  return page.getByRole('log', { name: 'Messages' }).getByRole('listitem');
}

/** The message items whose body text is exactly `text`. */
export function messages(page, text) {
  return page.getByRole('log', { name: 'Messages' }).locator('li.msg').filter({
    has: page.locator('.body', { hasText: new RegExp(`^${escapeRe(text)}$`) }),
  });
}

/** Own messages with `text` whose tick has reached one of `statuses`. */
export function mine(page, text, statuses = ['saved', 'delivered', 'seen']) {
  const sel = statuses.map((s) => `li.msg[data-status="${s}"]`).join(', ');
  return page.locator(sel).filter({ has: page.locator('.body', { hasText: new RegExp(`^${escapeRe(text)}$`) }) });
}

/** Makes the page believe it is hidden (or visible again) and tells it. */
export async function setHidden(page, hidden) {
  await page.evaluate((h) => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (h ? 'hidden' : 'visible') });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => h });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

/** A counter the client keeps on <body> (welcomes, refreshes, tokenCloses). */
export async function counter(page, name) {
  return Number(await page.evaluate((n) => document.body.dataset[n] || 0, name));
}

/**
 * People for one test, each in a browser context of their own, signed up and
 * in `room`; the contexts close when the test ends, pass or fail.
 * Returns [{ name, ctx, page, problems }, ...].
 */
export async function people(t, browser, room, prefixes, { query = '' } = {}) {
  const out = [];
  for (const prefix of prefixes) {
    const p = await person(browser);
    t.after(() => p.context.close().catch(() => {}));
    const name = uniqueName(prefix);
    const page = await p.page(`/${query}#${room}`);
    await signup(page, name);
    await roomHeading(page, room).waitFor();
    out.push({ name, ctx: p.context, page, problems: p.problems });
  }
  // Everyone sees everyone online before the test begins.
  for (const a of out) for (const b of out) if (a !== b) await personButton(a.page, b.name).waitFor();
  return out;
}

export function uniqueRoom(prefix) {
  return uniqueName(prefix).replace(/_/g, '-').slice(0, 30);
}

/** Sends `n` messages "<prefix> i" as fast as the page takes them; waits until all are saved. */
export async function burst(page, prefix, n) {
  await page.evaluate(([p, k]) => {
    const box = document.getElementById('composer-input');
    const form = document.getElementById('composer');
    for (let i = 0; i < k; i++) { box.value = `${p} ${i}`; form.requestSubmit(); }
  }, [prefix, n]);
  await waitFor(async () => (await page.locator('li.msg[data-status]').count()) >= n
      && (await page.locator('li.msg[data-status="pending"]').count()) === 0,
  { timeout: 30000, what: `${n} messages saved` });
}

export function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export async function waitFor(fn, { timeout = 10000, interval = 100, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try { last = await fn(); if (last) return last; } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, interval));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

export async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

/** Records every data-status a message of this page goes through, in order. */
export async function recordTicks(page) {
  await page.evaluate(() => {
    window.__ticks = {};
    const note = (li, s = li.dataset.status) => {
      const id = li.dataset.id;
      if (!id || !s) return;
      const list = (window.__ticks[id] ||= []);
      if (list[list.length - 1] !== s) list.push(s);
    };
    // Several statuses may be set in one task (batch=1: receipts share a
    // frame), so the values come from each change's oldValue, then the last.
    new MutationObserver((records) => {
      const changed = new Set();
      for (const r of records) {
        if (r.type === 'attributes') { note(r.target, r.oldValue); changed.add(r.target); }
        for (const n of r.addedNodes || []) if (n.nodeType === 1 && n.matches('li.msg')) note(n);
      }
      for (const li of changed) note(li);
    }).observe(document.getElementById('messages'), {
      subtree: true, childList: true, attributes: true, attributeOldValue: true, attributeFilter: ['data-status'],
    });
  });
}

const WEB_DIR = path.resolve(here, '..', 'web');

/**
 * A hubbub of its own, plain HTTP, with `args` (and HUBBUB_E2E_ARGS: the limit
 * and TLS flags run.sh found in this build); listens on port 0 and reports
 * the address it bound, serving this checkout's web/. Stopped when the test ends.
 */
export async function ownServer(t, args) {
  const dir = mkdtempSync(path.join(tmpdir(), 'hubbub-e2e-'));
  const extra = (process.env.HUBBUB_E2E_ARGS || '').split(' ').filter(Boolean);
  const srv = spawn(process.env.HUBBUB_BIN, ['--listen', '127.0.0.1:0', '--data-dir', dir, '--web-dir', WEB_DIR, ...extra, ...args],
    { stdio: ['ignore', 'pipe', 'ignore'] });
  const exited = new Promise((r) => srv.once('exit', r));
  t.after(async () => {
    srv.kill();
    await exited;
    rmSync(dir, { recursive: true, force: true });
  });
  const lines = readline.createInterface({ input: srv.stdout });
  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no "listening on" line from hubbub')), 15000);
    lines.on('line', (l) => {
      const m = /listening on (http:\/\/\S+)/.exec(l);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    srv.once('exit', (code) => reject(new Error(`hubbub exited: ${code}`)));
  });
  await waitFor(async () => (await fetch(`${base}/healthz`)).ok, { what: 'own server' });
  return base;
}
