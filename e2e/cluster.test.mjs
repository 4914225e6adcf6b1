// Failing over between cluster nodes: three hubbub processes (started here,
// plain HTTP, each its own data dir), the page loaded from node 1, two people
// chatting; node 1 is killed (SIGKILL) and the pages move their sockets to
// another node and go on, every message exactly once.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';
import {
  launch, person, uniqueName, uniqueRoom, signup, send, messages, mine, waitFor, online, personButton,
  roomHeading,
} from './helpers.mjs';

const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'web');
const SECRET = 'e2e-cluster-secret-0123456789abcdef0123';

function hasClusterFlags() {
  if (!process.env.HUBBUB_BIN) return false;
  try {
    return execFileSync(process.env.HUBBUB_BIN, ['--help'], { encoding: 'utf8' }).includes('--cluster-listen');
  } catch { return false; }
}
const needsCluster = { skip: hasClusterFlags() ? false : 'needs HUBBUB_BIN with cluster flags (run.sh sets it)' };

let browser;
before(async () => { if (!needsCluster.skip) browser = await launch(); });
after(async () => { await browser?.close(); });

/**
 * Starts node `name` (HUBBUB_E2E_ARGS: the limit and TLS flags run.sh found),
 * gossiping with `seeds`; resolves to { name, base, cluster, kill } once it
 * has printed its URL and cluster address. Stopped when the test ends.
 */
async function node(t, name, seeds = []) {
  const dir = mkdtempSync(path.join(tmpdir(), `hubbub-e2e-${name}-`));
  const extra = (process.env.HUBBUB_E2E_ARGS || '').split(' ').filter(Boolean);
  const args = ['--listen', '127.0.0.1:0', '--data-dir', path.join(dir, 'data'), ...extra,
    '--node-id', name, '--cluster-listen', '127.0.0.1:0', '--cluster-secret', SECRET,
    // The checkout's web/ (this test is about the client), not the copy
    // embedded when the binary was built.
    '--web-dir', WEB_DIR];
  if (seeds.length) args.push('--seeds', seeds.join(','));
  const srv = spawn(process.env.HUBBUB_BIN, args, {
    stdio: ['ignore', 'pipe', 'ignore'],
    // openraft logs a peer that is down at ERROR every 500 ms.
    env: { ...process.env, RUST_LOG: 'warn,openraft=off' },
  });
  const exited = new Promise((r) => srv.once('exit', r));
  const kill = async (signal = 'SIGKILL') => { if (srv.exitCode === null && srv.signalCode === null) srv.kill(signal); await exited; };
  t.after(async () => { await kill('SIGTERM'); rmSync(dir, { recursive: true, force: true }); });
  const lines = readline.createInterface({ input: srv.stdout });
  const found = await new Promise((resolve, reject) => {
    const out = {};
    const timer = setTimeout(() => reject(new Error(`${name}: no "listening on"/"cluster on" lines`)), 15000);
    lines.on('line', (l) => {
      const m = /^hubbub listening on (http:\/\/\S+)/.exec(l);
      if (m) out.base = m[1];
      const c = /^hubbub cluster on (\S+) \(node /.exec(l);
      if (c) out.cluster = c[1];
      if (out.base && out.cluster) { clearTimeout(timer); resolve(out); }
    });
    srv.once('exit', (code) => reject(new Error(`${name} exited: ${code}`)));
  });
  return { name, ...found, kill };
}

async function ready(n) {
  try { return (await fetch(`${n.base}/readyz`)).ok; } catch { return false; }
}

/** The page's "Server" note: which node its socket is on. */
function serverNote(page) {
  return page.getByRole('note', { name: 'Server node' });
}

async function ids(page) {
  return page.getByRole('log', { name: 'Messages' }).locator('li.msg').evaluateAll((els) => els.map((e) => e.dataset.id));
}

test('node 1 killed: the pages move to another node, the chat goes on with no gap and no duplicate', needsCluster, async (t) => {
  const n1 = await node(t, 'n1');
  const [n2, n3] = await Promise.all([node(t, 'n2', [n1.cluster]), node(t, 'n3', [n1.cluster])]);
  await waitFor(async () => (await ready(n1)) && (await ready(n2)) && (await ready(n3)),
    { timeout: 20000, what: 'three ready nodes' });

  const room = uniqueRoom('fail');
  const people = [];
  for (const prefix of ['alice', 'bob']) {
    // The server's CSP allows sockets and fetches to 'self' only, so a page of
    // node 1 could not reach node 2 at all (see the notes: a server gap);
    // the policy is bypassed here to test the client's failover itself.
    const p = await person(browser, { bypassCSP: true });
    t.after(() => p.context.close().catch(() => {}));
    const page = await p.context.newPage();
    await page.goto(`${n1.base}/#${room}`);
    const name = uniqueName(prefix);
    await signup(page, name);
    await roomHeading(page, room).waitFor();
    people.push({ name, page, problems: p.problems });
  }
  const [a, b] = people;
  await personButton(a.page, b.name).waitFor();
  await personButton(b.page, a.name).waitFor();
  for (const p of people) await serverNote(p.page).filter({ hasText: 'n1' }).waitFor();

  const before = ['hello from alice', 'hello from bob'];
  await send(a.page, before[0]);
  await send(b.page, before[1]);
  for (const p of people) for (const m of before) await messages(p.page, m).waitFor();

  await n1.kill('SIGKILL');
  // Written while the socket is down: kept and sent on the new node.
  await send(a.page, 'during the move');
  for (const p of people) {
    await serverNote(p.page).filter({ hasNotText: 'n1' }).waitFor({ timeout: 20000 });
    await online(p.page, 20000);
  }
  const moved = await serverNote(a.page).textContent();
  assert.match(moved, /n[23]/);
  await a.page.locator('#announcer').filter({ hasText: /Connection moved to server n[23]/ }).waitFor();

  const after = ['after the move, alice', 'after the move, bob'];
  await send(a.page, after[0]);
  await send(b.page, after[1]);
  const all = [...before, 'during the move', ...after];
  for (const p of people) for (const m of all) await messages(p.page, m).waitFor({ timeout: 20000 });
  for (const m of ['during the move', after[0]]) await mine(a.page, m).waitFor({ timeout: 20000 });
  await mine(b.page, after[1]).waitFor({ timeout: 20000 });
  // One more each way: once it has arrived, a duplicate of an earlier one
  // (same socket, in order) would have too.
  await send(a.page, 'last');
  for (const p of people) await messages(p.page, 'last').waitFor({ timeout: 20000 });
  for (const p of people) {
    for (const m of [...all, 'last']) assert.equal(await messages(p.page, m).count(), 1, `${p.name} sees "${m}" once`);
    const list = await ids(p.page);
    assert.equal(new Set(list).size, list.length, 'ids unique');
    assert.deepEqual(p.problems, []);
  }
});
