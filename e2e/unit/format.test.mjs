// How messages look: day labels with a fixed clock and named time zones,
// sender groups, the link tokenizer against hostile input, mentions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  dayKey, dayLabel, fullTime, continuesGroup, tokenize, safeHref, mentionsUser, GROUP_WINDOW_MS,
} from '../../web/js/format.js';

const NY = { timeZone: 'America/New_York', locale: 'en-GB' };
const TOKYO = { timeZone: 'Asia/Tokyo', locale: 'en-GB' };

test('day labels: Today, Yesterday, a weekday and date, the year only when another year', () => {
  const now = Date.parse('2026-03-10T15:00:00Z'); // 11:00 in New York
  assert.equal(dayLabel(Date.parse('2026-03-10T04:30:00Z'), now, NY), 'Today'); // 00:30 local
  assert.equal(dayLabel(Date.parse('2026-03-10T03:59:00Z'), now, NY), 'Yesterday'); // 23:59 the day before
  assert.equal(dayLabel(Date.parse('2026-03-09T04:00:00Z'), now, NY), 'Yesterday'); // 00:00 local (EDT from the 8th)
  // (ICU versions differ on the comma after the weekday.)
  assert.match(dayLabel(Date.parse('2026-03-09T03:59:00Z'), now, NY), /^Sunday,? 8 March$/);
  assert.match(dayLabel(Date.parse('2025-12-31T12:00:00Z'), now, NY), /^Wednesday,? 31 December 2025$/);
  // The same instant is another day in another zone.
  const t = Date.parse('2026-03-10T16:00:00Z'); // 12:00 in New York, 01:00 on the 11th in Tokyo
  const at = Date.parse('2026-03-10T14:00:00Z'); // 10:00 in New York, 23:00 on the 10th in Tokyo
  assert.equal(dayLabel(t, at, NY), 'Today');
  assert.match(dayLabel(t, at, TOKYO), /^Wednesday,? 11 March$/, 'the 11th in Tokyo: not today there');
  assert.equal(dayKey(t, TOKYO.timeZone), '2026-03-11');
  assert.equal(dayLabel('not a time', now, NY), '');
});

test('day labels across a 23-hour day (spring forward): yesterday is one calendar day back', () => {
  // New York springs forward on 2026-03-08: that day has 23 hours.
  const now = Date.parse('2026-03-09T04:30:00Z'); // 00:30 on the 9th
  assert.equal(dayLabel(Date.parse('2026-03-08T05:00:00Z'), now, NY), 'Yesterday'); // 00:00 on the 8th
  assert.match(dayLabel(Date.parse('2026-03-08T04:59:00Z'), now, NY), /^Saturday,? 7 March$/); // 23:59 on the 7th
  // And a 25-hour day (fall back, 2026-11-01).
  const later = Date.parse('2026-11-02T05:30:00Z'); // 00:30 on the 2nd
  assert.equal(dayLabel(Date.parse('2026-11-01T04:00:00Z'), later, NY), 'Yesterday'); // 00:00 on the 1st
  assert.match(dayLabel(Date.parse('2026-11-01T03:59:00Z'), later, NY), /^Saturday,? 31 October$/);
});

test('the full timestamp has the date and the seconds', () => {
  const s = fullTime(Date.parse('2026-01-05T13:03:07Z'), { timeZone: 'UTC', locale: 'en-GB' });
  assert.match(s, /Monday/);
  assert.match(s, /5 January 2026/);
  assert.match(s, /13:03:07/);
  assert.equal(fullTime('garbage'), '');
});

const msg = (sender, ts, extra = {}) => ({ sender, ts, type: 'chat', ...extra });

test('groups: one sender within the window on one day; anything else starts a new group', () => {
  const o = { timeZone: 'UTC' };
  const a = msg('ann', '2026-01-01T10:00:00Z');
  assert.equal(continuesGroup(a, msg('ann', '2026-01-01T10:04:59Z'), o), true);
  assert.equal(continuesGroup(a, msg('ann', new Date(Date.parse(a.ts) + GROUP_WINDOW_MS).toISOString()), o), true);
  assert.equal(continuesGroup(a, msg('ann', new Date(Date.parse(a.ts) + GROUP_WINDOW_MS + 1).toISOString()), o), false);
  assert.equal(continuesGroup(a, msg('bob', '2026-01-01T10:01:00Z'), o), false, 'another sender');
  assert.equal(continuesGroup(null, msg('ann', '2026-01-01T10:01:00Z'), o), false, 'a system line between');
  assert.equal(continuesGroup(a, msg('ann', '2026-01-01T09:59:00Z'), o), false, 'older below newer');
  assert.equal(continuesGroup(a, msg('ann', '2026-01-01T10:01:00Z', { action: true }), o), false, '/me');
  assert.equal(continuesGroup(a, msg('ann', '2026-01-01T10:01:00Z', { type: 'private', target: 'bob' }), o), false);
  const p = msg('ann', '2026-01-01T10:00:00Z', { type: 'private', target: 'bob' });
  assert.equal(continuesGroup(p, msg('ann', '2026-01-01T10:01:00Z', { type: 'private', target: 'bob' }), o), true);
  assert.equal(continuesGroup(p, msg('ann', '2026-01-01T10:01:00Z', { type: 'private', target: 'cy' }), o), false);
  assert.equal(continuesGroup(a, msg('ann', undefined), o), false, 'no time');
  // Midnight splits a group even within the window.
  const late = msg('ann', '2026-01-01T23:58:00Z');
  assert.equal(continuesGroup(late, msg('ann', '2026-01-02T00:01:00Z'), o), false);
  assert.equal(continuesGroup(late, msg('ann', '2026-01-02T00:01:00Z'), { timeZone: 'America/New_York' }), true);
});

const links = (text, me) => tokenize(text, me).filter((t) => t.type === 'link').map((t) => [t.text, t.href]);
const joined = (text, me) => tokenize(text, me).map((t) => t.text).join('');

test('links: http and https only, the sentence punctuation left out, the text kept whole', () => {
  assert.deepEqual(links('see https://example.com/a?b=1#c.'), [['https://example.com/a?b=1#c', 'https://example.com/a?b=1#c']]);
  assert.deepEqual(links('(http://example.com/x), and HTTPS://Example.COM!'), [
    ['http://example.com/x', 'http://example.com/x'], ['HTTPS://Example.COM', 'https://example.com/']]);
  assert.deepEqual(links('https://en.wikipedia.org/wiki/Rust_(programming_language)'),
    [['https://en.wikipedia.org/wiki/Rust_(programming_language)', 'https://en.wikipedia.org/wiki/Rust_(programming_language)']]);
  assert.deepEqual(links('"https://example.com/q"'), [['https://example.com/q', 'https://example.com/q']]);
  assert.deepEqual(tokenize('plain text'), [{ type: 'text', text: 'plain text' }]);
  assert.deepEqual(tokenize(''), []);
  for (const s of ['a https://x.org b http://y.org/ c', 'https://a.b/<script>', 'x"https://q.r/"y']) {
    assert.equal(joined(s), s);
  }
});

test('links: hostile input stays text', () => {
  const hostile = [
    'javascript:alert(1)',
    'JaVaScRiPt:alert(document.cookie)',
    ' javascript://example.com/%0aalert(1)',
    'data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==',
    'vbscript:msgbox(1)',
    'file:///etc/passwd',
    'ftp://example.com/x',
    '<a href="javascript:alert(1)">x</a>',
    'http://',
    'https://',
    'http://javascript:alert(1)',
    'https:example.com',
    'http:/\\example.com',
    '//example.com/x',
    'www.example.com',
    'blob:https://example.com/uuid',
  ];
  for (const s of hostile) {
    for (const t of tokenize(s)) {
      if (t.type === 'link') {
        // Anything tokenized as a link is a real http(s) URL with a host.
        const u = new URL(t.href);
        assert.ok(u.protocol === 'http:' || u.protocol === 'https:', `${s} -> ${t.href}`);
        assert.ok(u.hostname, s);
      }
    }
    assert.equal(joined(s), s, 'nothing lost or added');
  }
  for (const s of ['javascript:alert(1)', 'data:text/html,<script>alert(1)</script>', 'http://', 'https://',
    'http://javascript:alert(1)', 'www.example.com', 'file:///etc/passwd']) {
    assert.deepEqual(links(s), [], s);
  }
  // An http link inside an attribute-looking string stops at the quote.
  assert.deepEqual(links('<a href="https://ok.example/">'), [['https://ok.example/', 'https://ok.example/']]);
  assert.deepEqual(links('https://ok.example/"onmouseover="alert(1)'), [['https://ok.example/', 'https://ok.example/']]);
  assert.equal(safeHref('javascript:alert(1)'), null);
  assert.equal(safeHref('data:,x'), null);
  // Schemes with a host are refused by the scheme check itself.
  for (const s of ['ftp://example.com/x', 'ws://example.com/', 'file://host/etc/passwd', 'chrome://settings']) {
    assert.equal(safeHref(s), null, s);
  }
  assert.equal(safeHref('https://example.com'), 'https://example.com/');
});

test('mentions: @name at word boundaries, case-insensitive; the server list when the frame has one', () => {
  const m = (content, extra) => ({ content, ...extra });
  assert.equal(mentionsUser(m('hi @ann'), 'ann'), true);
  assert.equal(mentionsUser(m('@ANN, look'), 'ann'), true);
  assert.equal(mentionsUser(m('(@ann)'), 'ann'), true);
  assert.equal(mentionsUser(m('hi @anna'), 'ann'), false, 'a longer name');
  assert.equal(mentionsUser(m('hi @ann_b'), 'ann'), false, 'underscore is a name character');
  assert.equal(mentionsUser(m('mail bob@ann.org'), 'ann'), false, 'an e-mail address');
  assert.equal(mentionsUser(m('hi ann'), 'ann'), false, 'no @');
  assert.equal(mentionsUser(m('hi @a.n'), 'a.n'), true);
  assert.equal(mentionsUser(m('hi @axn'), 'a.n'), false, 'regex characters are literal');
  assert.equal(mentionsUser(m('hi @ann', { mentions: [] }), 'ann'), false, 'the server said no one');
  assert.equal(mentionsUser(m('no at sign', { mentions: ['ann'] }), 'ann'), true, 'the server said ann');
  assert.equal(mentionsUser(m(undefined), 'ann'), false);
  assert.equal(mentionsUser(m('@ann'), null), false);
  assert.deepEqual(tokenize('hey @Ann see https://x.org/@ann', 'ann'), [
    { type: 'text', text: 'hey ' }, { type: 'mention', text: '@Ann' }, { type: 'text', text: ' see ' },
    { type: 'link', text: 'https://x.org/@ann', href: 'https://x.org/@ann' }]);
});
