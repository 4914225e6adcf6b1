// The page: everything that touches the DOM for the protocol handlers (the
// `ui` they call) and the connection state. User content goes in through
// textContent, never innerHTML.

import { typingText } from './protocol.js';
import {
  continuesGroup, dayKey, dayLabel, fullTime, mentionsUser, tokenize,
} from './format.js';
import { withSystemLines } from './rooms.js';

export const $ = (id) => document.getElementById(id);
export const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

function fmtTime(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

// Visible words next to the marks, so the state never rests on colour or glyphs alone.
const STATUS_TEXT = {
  pending: ['…', 'Sending'],
  saved: ['✓', 'Saved'],
  delivered: ['✓✓', 'Delivered'],
  seen: ['✓✓', 'Seen'],
  failed: ['!', 'Not sent'],
};

export function isAtBottom() {
  const s = $('scroller');
  return s.scrollHeight - s.scrollTop - s.clientHeight < 48;
}

export function scrollToBottom() {
  const s = $('scroller');
  s.scrollTop = s.scrollHeight;
}

export function announce(text) {
  const a = $('announcer');
  a.append(el('p', null, text));
  while (a.childElementCount > 3) a.firstElementChild.remove();
}

/** The tab title: the unread total of all the user's rooms ("99+" from 100). */
export function updateTitle(S) {
  const base = S.room ? `#${S.room} · hubbub` : 'hubbub';
  const n = S.titleCount || 0;
  document.title = n ? `(${n >= 100 ? '99+' : n}) ${base}` : base;
}

/**
 * A message's text into `body`: text nodes, `<a>` for http(s) links only
 * (tokenize() checked the scheme; the element's own parse checks it again)
 * and `<mark>` for mentions of `me`. DOM APIs only, never innerHTML.
 */
export function renderText(body, text, me) {
  body.replaceChildren();
  for (const t of tokenize(text, me)) {
    if (t.type === 'link') {
      const a = document.createElement('a');
      a.href = t.href;
      if (a.protocol === 'http:' || a.protocol === 'https:') {
        a.textContent = t.text;
        a.target = '_blank';
        a.rel = 'noopener noreferrer';
        body.append(a);
        continue;
      }
    }
    if (t.type === 'mention') body.append(el('mark', 'mention-mark', t.text));
    else body.append(document.createTextNode(t.text));
  }
}

/**
 * The `ui` of protocol.js. `hooks`: { onSeen(ids), requestOlder(), pickUser(u), onIncoming(m) }.
 */
export function createView(S, hooks) {
  const els = new Map(); // id -> {li, body, pm, time, tick, tickIcon, tickText}
  const msgOf = new WeakMap(); // li -> its message, for grouping
  let marker = null;
  let relayoutPass = 0;

  const seenObserver = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const id = e.target.dataset.id;
      // On screen = at least half of it, or (taller than the view) a good part of the view.
      const enough = e.isIntersecting && (e.intersectionRatio >= 0.5 || e.intersectionRect.height >= 120);
      e.target.dataset.onScreen = String(enough); // for tests: the observer has judged it
      if (enough) S.visibleUnseen.add(id);
      else S.visibleUnseen.delete(id);
    }
    flushSeen();
  }, { root: null, threshold: [0, 0.1, 0.25, 0.5, 1] });

  function flushSeen() {
    if (document.visibilityState !== 'visible' || !S.conn) return;
    hooks.onSeen([...S.visibleUnseen]);
    if (isAtBottom()) clearUnread();
  }

  function clearUnread() {
    if (S.newerTrimmed) return;
    S.unread = 0;
    syncJump();
    updateTitle(S);
  }

  // "Jump to latest": shown whenever the list is scrolled up (with the count
  // of new messages below when there are some) or the newest were dropped
  // after paging; hidden at the bottom.
  function syncJump(n = S.unread, trimmed = S.newerTrimmed) {
    const jb = $('jump-btn');
    if (trimmed) {
      jb.textContent = n ? `${n} new · Jump to the latest messages` : 'Jump to the latest messages';
      jb.hidden = false;
    } else if (n) {
      jb.textContent = n === 1 ? '1 new message below' : `${n} new messages below`;
      jb.hidden = false;
    } else if (!isAtBottom()) {
      jb.textContent = 'Jump to the latest messages';
      jb.hidden = false;
    } else {
      jb.hidden = true;
    }
  }

  // Sender groups and day separators, over the whole list: a message
  // continues the group of the message right above it (format.js says
  // when); a system line or a marker between breaks the group; the first
  // message of each day gets a separator (a heading) right above it.
  // Separators are reused, and those no longer needed go.
  function relayout() {
    const list = $('messages');
    const pass = String(++relayoutPass);
    const now = Date.now();
    let prev = null; let lastDay = null;
    for (const li of [...list.children]) {
      if (li.classList.contains('day-sep')) continue;
      const m = msgOf.get(li);
      if (!m) { prev = null; continue; }
      const day = dayKey(m.ts);
      if (day && day !== lastDay) {
        daySeparator(li, day, now).dataset.pass = pass;
        lastDay = day;
        prev = null;
      }
      const cont = continuesGroup(prev, m);
      const group = cont ? 'cont' : 'start';
      if (li.dataset.group !== group) { // untouched when unchanged: no style work
        li.classList.toggle('cont', cont);
        li.dataset.group = group;
      }
      prev = m;
    }
    for (const sep of list.querySelectorAll(':scope > li.day-sep')) if (sep.dataset.pass !== pass) sep.remove();
  }

  function daySeparator(li, day, now) {
    let sep = li.previousElementSibling;
    if (!sep || !sep.classList.contains('day-sep') || sep.dataset.day !== day) {
      sep = el('li', 'day-sep');
      sep.dataset.day = day;
      sep.append(el('h3', 'day-label'));
      li.before(sep);
    }
    const label = dayLabel(Date.parse(msgOf.get(li).ts), now);
    const h = sep.firstElementChild;
    if (h.textContent !== label) h.textContent = label;
    return sep;
  }

  // The times are one tab stop (roving tabindex): Tab reaches the newest
  // (kept while the reader is among them), the arrow keys, Home and End move
  // between them, and the focused one shows its full timestamp (style.css).
  function rovingTime() {
    const list = $('messages');
    const focused = document.activeElement;
    if (focused instanceof HTMLTimeElement && list.contains(focused)) return; // the reader is there
    for (const t of list.querySelectorAll('time.ts[tabindex="0"]')) t.tabIndex = -1;
    const times = list.querySelectorAll('time.ts');
    if (times.length) times[times.length - 1].tabIndex = 0;
  }

  function onTimeKey(ev) {
    const t = ev.target;
    if (!(t instanceof HTMLTimeElement)) return;
    const times = [...$('messages').querySelectorAll('time.ts')];
    const i = times.indexOf(t);
    const to = { ArrowUp: i - 1, ArrowDown: i + 1, Home: 0, End: times.length - 1 }[ev.key];
    if (to === undefined || !times[to]) return;
    ev.preventDefault();
    t.tabIndex = -1;
    times[to].tabIndex = 0;
    times[to].focus();
  }
  $('messages').addEventListener('keydown', onTimeKey);

  function build(entry) {
    const li = el('li', 'msg');
    li.dataset.id = entry.id;
    li.dataset.sender = entry.m.sender;
    if (entry.own) li.classList.add('own');
    const meta = el('div', 'meta');
    const sender = el('span', 'sender', entry.own ? `${entry.m.sender} (you)` : entry.m.sender);
    const pm = el('span', 'pm-label');
    const mention = el('span', 'mention-label', 'mentions you');
    mention.hidden = true;
    const time = el('time', 'ts');
    time.tabIndex = -1;
    meta.append(sender, pm, mention, time);
    const body = el('div', 'body');
    const tick = el('span', 'tick');
    const tickIcon = el('span', 'tick-icon');
    tickIcon.setAttribute('aria-hidden', 'true');
    const tickText = el('span', 'tick-text');
    tick.append(tickIcon, tickText);
    tick.hidden = true;
    li.append(meta, body, tick);
    const v = { li, body, pm, mention, time, tick, tickIcon, tickText };
    els.set(entry.id, v);
    fill(entry, v);
    if (entry.status) paintStatus(entry, v);
    return li;
  }

  function fill(entry, v) {
    const { m } = entry;
    const priv = m.type === 'private';
    v.li.classList.toggle('private', priv);
    v.li.classList.toggle('action', !!m.action);
    if (priv) {
      v.pm.textContent = entry.own ? `private to ${m.target}` : 'private to you';
      v.pm.hidden = false;
    } else {
      v.pm.textContent = '';
      v.pm.hidden = true;
    }
    const mentioned = !entry.own && mentionsUser(m, S.me);
    v.li.classList.toggle('mention', mentioned);
    v.mention.hidden = !mentioned;
    renderText(v.body, m.action ? `* ${m.sender} ${m.content}` : m.content, entry.own ? null : S.me);
    if (m.ts) {
      v.time.dateTime = m.ts;
      v.time.textContent = fmtTime(m.ts);
      v.time.title = fullTime(m.ts); // hover, and the description when focused
    }
    if (m.cursor) v.li.dataset.cursor = m.cursor;
    msgOf.set(v.li, m);
  }

  function paintStatus(entry, v) {
    v.li.dataset.status = entry.status;
    v.tick.hidden = false;
    v.tick.dataset.status = entry.status;
    const [icon, text] = STATUS_TEXT[entry.status];
    v.tickIcon.textContent = icon;
    v.tickText.textContent = entry.detail ? `${text}: ${entry.detail}` : text;
  }

  function systemItem(text, kind) {
    const cls = { error: 'system error', gap: 'system gap' }[kind] || 'system';
    const li = el('li', cls);
    if (kind === 'gap') li.dataset.gap = 'true';
    li.append(el('span', 'visually-hidden', kind === 'error' ? 'Error: ' : 'Notice: '));
    li.append(document.createTextNode(text));
    return li;
  }

  function systemLine(text, kind = 'system') {
    if (!text) return;
    const wasBottom = isAtBottom();
    $('messages').append(systemItem(text, kind));
    relayout();
    if (wasBottom) scrollToBottom();
  }

  function renderOlder() {
    const p = $('history-status');
    p.replaceChildren();
    if (S.loadingOlder) {
      p.textContent = 'Loading older messages…';
      p.hidden = false;
    } else if (S.moreOlder) {
      const b = el('button', 'btn btn-small btn-secondary', 'Load older messages');
      b.type = 'button';
      b.addEventListener('click', hooks.requestOlder);
      p.append(b);
      p.hidden = false;
    } else if (S.joinedOnce) {
      p.textContent = 'This is the start of the room.';
      p.hidden = false;
    } else {
      p.hidden = true;
    }
  }

  return {
    flushSeen,
    clearUnread,
    syncJump,
    relayout,
    atBottom: isAtBottom,
    visible: () => document.visibilityState === 'visible',
    setMe(name) { $('me-name').textContent = name; },
    appendMessage(entry, { marker: withMarker }) {
      const list = $('messages');
      if (withMarker) {
        marker = el('li', 'new-marker');
        marker.append(el('span', null, 'New messages'));
        list.append(marker);
      }
      list.append(build(entry));
      relayout();
      rovingTime();
    },
    // A room shown again: its buffer at once (one layout pass), the
    // "New messages" marker above `markerAt`, its system lines where they came.
    renderAll(entries, markerAt, sys = []) {
      const frag = document.createDocumentFragment();
      for (const { entry: e, line } of withSystemLines(entries, sys)) {
        if (line) { frag.append(systemItem(line.text, line.kind)); continue; }
        if (e.id === markerAt) {
          marker = el('li', 'new-marker');
          marker.append(el('span', null, 'New messages'));
          frag.append(marker);
        }
        frag.append(build(e));
      }
      $('messages').append(frag);
      relayout();
      rovingTime();
    },
    insertOlder(entries) {
      const s = $('scroller');
      const before = s.scrollHeight - s.scrollTop;
      const list = $('messages');
      const first = list.firstChild;
      for (const e of entries) list.insertBefore(build(e), first);
      relayout();
      rovingTime();
      s.scrollTop = s.scrollHeight - before;
    },
    updateMessage(entry) { const v = els.get(entry.id); if (v) { fill(entry, v); relayout(); } },
    renderStatus(entry) { const v = els.get(entry.id); if (v) paintStatus(entry, v); },
    removeMessage(id) {
      const v = els.get(id);
      if (!v) return;
      seenObserver.unobserve(v.li);
      v.li.remove();
      els.delete(id);
      relayout();
      rovingTime();
    },
    clearMessages() {
      seenObserver.disconnect();
      els.clear();
      marker = null;
      $('messages').replaceChildren();
    },
    clearMarker() { if (marker) { marker.remove(); marker = null; relayout(); } },
    systemLine,
    announce,
    scrollToBottom,
    showUnread(n, trimmed) {
      syncJump(n, !!trimmed);
      updateTitle(S);
    },
    // A new live message from someone else: counted in the tab title while
    // the tab is hidden, and maybe a desktop notification (hooks.onIncoming).
    incoming(m) {
      if (document.visibilityState !== 'visible') {
        S.hiddenUnread += 1;
        updateTitle(S);
      }
      hooks.onIncoming(m);
    },
    // Others' messages carry data-acked: the last receipt this tab sent.
    observeSeen(id) {
      const v = els.get(id);
      if (!v) return;
      if (!v.li.dataset.acked) v.li.dataset.acked = 'delivered';
      seenObserver.observe(v.li);
    },
    seenSent(id) {
      const v = els.get(id);
      if (!v) return;
      v.li.dataset.acked = 'seen';
      seenObserver.unobserve(v.li);
    },
    renderTyping() {
      const text = typingText(S, Date.now());
      const t = $('typing');
      if (t.textContent !== text) t.textContent = text;
    },
    renderPresence(users, count) {
      const ul = $('people-list');
      ul.replaceChildren();
      for (const u of users) {
        const li = el('li');
        if (u === S.me) {
          li.append(el('span', 'person me', `${u} (you)`));
        } else {
          const b = el('button', 'person', u);
          b.type = 'button';
          b.dataset.user = u;
          b.setAttribute('aria-label', `${u}: send a private message`);
          b.addEventListener('click', () => hooks.pickUser(u));
          li.append(b);
        }
        ul.append(li);
      }
      $('people-count').textContent = `(${count})`;
    },
    renderOlder,
  };
}

// ---------- connection state ----------

const STATE_TEXT = {
  'idle': 'Starting…',
  'connecting': 'Connecting…',
  'online': 'Online',
  'offline': 'Offline: waiting for the network',
  'reconnecting': 'Reconnecting…',
  'replaced': 'Replaced by another tab',
  'evicted': 'Disconnected (too slow); reconnecting…',
  'signed-out': 'Signed out',
};

/** The cluster node the socket is on; null (a single node): hidden. */
export function setNode(name) {
  const n = $('node');
  n.hidden = !name;
  n.dataset.node = name || '';
  $('node-name').textContent = name || '';
}

export function setConnState(state, info = {}) {
  const c = $('conn');
  c.dataset.state = state;
  let text = STATE_TEXT[state] || state;
  if ((state === 'reconnecting' || state === 'evicted') && info.at) {
    const secs = Math.max(1, Math.round((info.at - Date.now()) / 1000));
    text = state === 'evicted'
      ? `Disconnected (too slow); retrying in ${secs} s`
      : `Reconnecting in ${secs} s…`;
  }
  $('conn-text').textContent = text;
  const banner = $('conn-banner');
  const btn = $('reconnect-btn');
  if (state === 'replaced') {
    banner.hidden = false;
    banner.dataset.kind = 'replaced';
    $('conn-banner-text').textContent =
      'This chat was opened in another tab or window, so this one stopped. Messages keep arriving there.';
    btn.textContent = 'Use this tab instead';
  } else if (state === 'offline' || state === 'reconnecting' || state === 'evicted') {
    banner.hidden = false;
    banner.dataset.kind = state;
    $('conn-banner-text').textContent = state === 'offline'
      ? 'You are offline. Messages you write are kept and sent when the connection is back.'
      : 'The connection was lost. Messages you write are kept and sent when it is back.';
    btn.textContent = 'Retry now';
  } else {
    banner.hidden = true;
  }
  $('composer').dataset.conn = state;
}
