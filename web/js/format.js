// How a message looks, with no DOM (node imports it in the unit tests): the
// sender groups, the day separators, the full timestamp, the links and the
// mentions in a message's text. render.js builds the elements from these.

/** A run of messages from one sender within this many ms shows the name once. */
export const GROUP_WINDOW_MS = 5 * 60 * 1000;

const DAY_MS = 24 * 60 * 60 * 1000;

// ---------- days ----------

/**
 * The calendar day of `ts` (ms) in `timeZone` (undefined: the browser's) as
 * "YYYY-MM-DD", or null for a bad time. Intl rather than getDate() so the
 * unit tests can name a zone.
 */
export function dayKey(ts, timeZone) {
  const d = new Date(ts);
  const ms = d.getTime();
  if (Number.isNaN(ms)) return null;
  // The list is laid out again on every change (up to 500 messages): the
  // formatter is made once per zone and the keys are remembered.
  const memo = `${timeZone || ''}|${ms}`;
  const hit = dayKeys.get(memo);
  if (hit) return hit;
  let f = dayFormats.get(timeZone || '');
  if (!f) {
    f = new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' });
    dayFormats.set(timeZone || '', f);
  }
  const parts = f.formatToParts(d);
  const v = (t) => parts.find((p) => p.type === t).value;
  const key = `${v('year')}-${v('month')}-${v('day')}`;
  if (dayKeys.size >= 4000) dayKeys.clear(); // bounded; refilled by the next layout
  dayKeys.set(memo, key);
  return key;
}
const dayFormats = new Map(); // time zone -> Intl.DateTimeFormat
const dayKeys = new Map();    // "zone|ms" -> "YYYY-MM-DD"

// Whole days between two keys: through UTC midnights, so a 23- or 25-hour
// day (DST) is still one day.
function daysBetween(a, b) {
  const utc = (k) => Date.UTC(Number(k.slice(0, 4)), Number(k.slice(5, 7)) - 1, Number(k.slice(8, 10)));
  return Math.round((utc(a) - utc(b)) / DAY_MS);
}

/**
 * The separator's text: "Today", "Yesterday", or the date (with the year
 * when it is not this year's). `opts`: { timeZone, locale } (undefined: the
 * browser's).
 */
export function dayLabel(ts, now, { timeZone, locale } = {}) {
  const k = dayKey(ts, timeZone);
  const today = dayKey(now, timeZone);
  if (!k || !today) return '';
  const diff = daysBetween(today, k);
  if (diff === 0) return 'Today';
  if (diff === 1) return 'Yesterday';
  const sameYear = k.slice(0, 4) === today.slice(0, 4);
  return new Intl.DateTimeFormat(locale, {
    timeZone, weekday: 'long', day: 'numeric', month: 'long', year: sameYear ? undefined : 'numeric',
  }).format(new Date(ts));
}

/** The full timestamp shown on hover and focus: "Monday, 5 January 2026 at 14:03:07". */
export function fullTime(ts, { timeZone, locale } = {}) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '';
  return new Intl.DateTimeFormat(locale, {
    timeZone, dateStyle: 'full', timeStyle: 'medium',
  }).format(d);
}

// ---------- groups ----------

/**
 * Whether message `cur` continues the group of `prev` (the message just above
 * it, or null when something else, a system line or a marker, is between):
 * the same sender, kind and private partner, neither an action, on the same
 * day, `cur` at most GROUP_WINDOW_MS after `prev`. Messages are
 * { sender, type, target, action, ts } as in the frames.
 */
export function continuesGroup(prev, cur, { timeZone, windowMs = GROUP_WINDOW_MS } = {}) {
  if (!prev || !cur) return false;
  if (prev.sender !== cur.sender || prev.type !== cur.type) return false;
  if (cur.type === 'private' && prev.target !== cur.target) return false;
  if (prev.action || cur.action) return false;
  const a = Date.parse(prev.ts); const b = Date.parse(cur.ts);
  if (Number.isNaN(a) || Number.isNaN(b)) return false;
  if (b < a || b - a > windowMs) return false;
  return dayKey(a, timeZone) === dayKey(b, timeZone);
}

// ---------- links and mentions ----------

// A candidate: http(s):// and then anything up to white space or a character
// that never belongs in a URL typed in a chat (quotes, angle brackets).
const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi;
const TRAILING = '.,;:!?\'"”’»]}';

// Trailing punctuation is the sentence's, not the URL's, except a ")" that
// closes a "(" inside the URL (Wikipedia links).
function trimUrl(s) {
  let out = s;
  while (out) {
    const c = out[out.length - 1];
    if (c === ')') {
      const opens = out.split('(').length - 1;
      const closes = out.split(')').length - 1;
      if (closes <= opens) return out;
    } else if (!TRAILING.includes(c)) {
      return out;
    }
    out = out.slice(0, -1);
  }
  return out;
}

/** Only these schemes ever become links. */
export function safeHref(candidate) {
  let u;
  try { u = new URL(candidate); } catch { return null; }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
  if (!u.hostname) return null;
  return u.href;
}

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// `@name` with no word character right before (not an e-mail address) or
// right after (not a longer name): usernames are [a-z0-9_].
function mentionRe(name, flags = 'i') {
  return new RegExp(`(?<![A-Za-z0-9_])@${escapeRe(name)}(?![A-Za-z0-9_])`, flags);
}

/**
 * Whether message `m` mentions user `me`: the server's `mentions` list when
 * the frame has one (the multi-room protocol stores it with the message),
 * otherwise `@me` in the content, case-insensitive, at word boundaries.
 */
export function mentionsUser(m, me) {
  if (!m || !me) return false;
  if (Array.isArray(m.mentions)) return m.mentions.some((u) => String(u).toLowerCase() === me.toLowerCase());
  return typeof m.content === 'string' && mentionRe(me).test(m.content);
}

/**
 * A message's text as tokens for the page to build with DOM APIs:
 * { type: 'text', text }, { type: 'link', text, href } (http/https only,
 * `href` normalised by URL) and, when `me` is given, { type: 'mention', text }
 * for `@me`. Concatenating every token's text gives `text` back.
 */
export function tokenize(text, me) {
  const out = [];
  const s = String(text ?? '');
  const push = (type, t, extra) => {
    if (!t) return;
    const last = out[out.length - 1];
    if (type === 'text' && last && last.type === 'text') last.text += t;
    else out.push({ type, text: t, ...extra });
  };
  let at = 0;
  for (const m of s.matchAll(URL_RE)) {
    if (m.index < at) continue;
    const raw = trimUrl(m[0]);
    const href = safeHref(raw);
    if (!href) continue;
    mentionTokens(s.slice(at, m.index), me, push);
    push('link', raw, { href });
    at = m.index + raw.length;
  }
  mentionTokens(s.slice(at), me, push);
  return out;
}

function mentionTokens(s, me, push) {
  if (!me || !s) { push('text', s); return; }
  const re = mentionRe(me, 'gi');
  let at = 0;
  for (const m of s.matchAll(re)) {
    push('text', s.slice(at, m.index));
    push('mention', m[0]);
    at = m.index + m[0].length;
  }
  push('text', s.slice(at));
}
