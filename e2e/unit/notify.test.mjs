// Desktop notifications: off by default, the permission asked for only by
// toggle() (the click), per-room mute, and only for a private message or a
// mention while the tab is hidden.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Notifier, notifyReason, ENABLED_KEY } from '../../web/js/notify.js';

function fakeEnv({ permission = 'default', answer = 'granted' } = {}) {
  const made = [];
  const asked = [];
  class FakeNotification {
    static permission = permission;
    static async requestPermission() { asked.push(1); FakeNotification.permission = answer; return answer; }
    constructor(title, opts) { this.title = title; this.opts = opts; this.closed = false; made.push(this); }
    close() { this.closed = true; }
  }
  const store = new Map();
  const env = {
    Notification: FakeNotification,
    storage: { getItem: (k) => (store.has(k) ? store.get(k) : null), setItem: (k, v) => store.set(k, String(v)) },
    isHidden: true,
    hidden() { return this.isHidden; },
    focused: 0,
    focus() { this.focused += 1; },
  };
  return { env, made, asked, store };
}

const chat = (sender, content, extra = {}) => ({ id: `m-${Math.random()}`, type: 'chat', sender, content, ...extra });

test('off by default: nothing is asked for or shown until the toggle', async () => {
  const { env, made, asked } = fakeEnv();
  const n = new Notifier(env);
  assert.equal(n.enabled, false);
  assert.equal(n.consider(chat('bob', 'hi @ann'), { me: 'ann', room: 'r' }), null);
  assert.equal(asked.length, 0, 'never asked without a click');
  assert.equal(made.length, 0);
  assert.equal(await n.toggle(), 'on');
  assert.equal(asked.length, 1);
  assert.equal(n.enabled, true);
  assert.ok(n.consider(chat('bob', 'hi @ann'), { me: 'ann', room: 'r' }));
  assert.equal(made.length, 1);
  assert.equal(made[0].title, 'bob mentioned you in #r');
  assert.equal(made[0].opts.body, 'hi @ann');
  made[0].onclick();
  assert.equal(env.focused, 1);
  assert.equal(made[0].closed, true);
  assert.equal(await n.toggle(), 'off');
  assert.equal(n.enabled, false);
});

test('a refused permission stays off; already granted still needs the click', async () => {
  const refused = fakeEnv({ answer: 'denied' });
  const n = new Notifier(refused.env);
  assert.equal(await n.toggle(), 'denied');
  assert.equal(n.enabled, false);
  assert.equal(refused.store.get(ENABLED_KEY), 'off');
  const granted = fakeEnv({ permission: 'granted' });
  const g = new Notifier(granted.env);
  assert.equal(g.enabled, false, 'a granted permission alone does not turn them on');
  assert.equal(await g.toggle(), 'on');
  assert.equal(granted.asked.length, 1, 'asked (answered at once) from the click');
  const none = new Notifier({ ...fakeEnv().env, Notification: undefined });
  assert.equal(none.supported, false);
  assert.equal(await none.toggle(), 'unsupported');
});

test('only while hidden, only for me, not in a muted room', async () => {
  const { env, made } = fakeEnv({ permission: 'granted' });
  const n = new Notifier(env);
  await n.toggle();
  const at = { me: 'ann', room: 'r' };
  assert.equal(n.consider(chat('bob', 'hello all'), at), null, 'not for me');
  assert.equal(n.consider(chat('ann', 'talking to @ann'), at), null, 'my own');
  assert.ok(n.consider({ id: 'p1', type: 'private', sender: 'bob', target: 'ann', content: 'psst' }, at));
  assert.equal(made.at(-1).title, 'Private message from bob');
  env.isHidden = false;
  assert.equal(n.consider(chat('bob', '@ann'), at), null, 'the tab is visible');
  env.isHidden = true;
  n.setMuted('r', true);
  assert.equal(n.isMuted('r'), true);
  assert.equal(n.consider(chat('bob', '@ann'), at), null, 'muted');
  assert.ok(n.consider(chat('bob', '@ann'), { me: 'ann', room: 'other' }), 'mute is per room');
  n.setMuted('r', false);
  assert.ok(n.consider(chat('bob', '@ann'), at));
  assert.equal(made.length, 3);
  assert.match(made[1].opts.tag, /^hubbub-/);
  const long = n.consider(chat('bob', `@ann ${'x'.repeat(1000)}`), at);
  assert.equal(long.opts.body.length, 200);
});

test('the reason: a private message to me, a mention (the server list first), else none', () => {
  assert.equal(notifyReason({ type: 'private', sender: 'bob', target: 'ann' }, 'ann'), 'private');
  assert.equal(notifyReason({ type: 'private', sender: 'ann', target: 'bob' }, 'ann'), null);
  assert.equal(notifyReason({ type: 'chat', sender: 'bob', content: 'Hi @ANN!' }, 'ann'), 'mention');
  assert.equal(notifyReason({ type: 'chat', sender: 'bob', content: 'Hi @ann', mentions: ['cy'] }, 'ann'), null);
  assert.equal(notifyReason({ type: 'chat', sender: 'bob', content: 'hi', mentions: ['ann'] }, 'ann'), 'mention');
  assert.equal(notifyReason({ type: 'chat', sender: 'bob', content: 'bob@ann.example' }, 'ann'), null);
});
