// Server frames -> state, with no DOM: every change the page needs goes
// through `ctx.ui` (render.js in the browser, a recorder in the unit tests)
// and every frame out through `ctx.S.conn` (conn.js). `ctx` is
// { S, ui, timers, saveOutbox }.

import { RANK, rememberId } from './state.js';
import { utf8Bytes } from './util.js';

export const TYPING_EXPIRE_MS = 6000; // others' typing expires without an update
export const LOCAL_COMMANDS = new Set(['who', 'help', 'ping']); // replies only, nothing stored
export const MAX_SYSTEM_LINES = 200; // per room: joins, leaves, replies kept for when it is shown again
export const GAP_TEXT = 'Reconnected after a gap: showing the latest messages. Scroll up for earlier ones.';
const DEFAULT_LIMITS = { max_frame: 8192, max_content: 4000 };

export function handleFrame(ctx, f) {
  switch (f.type) {
    case 'welcome': return onWelcome(ctx, f);
    case 'history': return onHistory(ctx, f);
    case 'chat':
    case 'private': return onMessage(ctx, f, { live: true });
    case 'receipt': return onReceipt(ctx, f);
    case 'typing': return onTyping(ctx, f);
    case 'presence': return onPresence(ctx, f);
    case 'system': return systemLine(ctx, f.content);
    case 'error': return onError(ctx, f);
    default: return undefined;
  }
}

/**
 * A system line (a join, a leave, a reply, an error) in the room it belongs
 * to: kept in the room's state after the message that was newest when it
 * came (`S.sys`, capped), so the room shows it whenever it is shown, and
 * drawn now (a room not shown has a `ui` that draws nothing).
 */
export function systemLine(ctx, text, kind = 'system') {
  const { S } = ctx;
  if (!text) return;
  S.sys.push({ text, kind, after: S.order.length ? S.order[S.order.length - 1] : null });
  if (S.sys.length > MAX_SYSTEM_LINES) S.sys.splice(0, S.sys.length - MAX_SYSTEM_LINES);
  ctx.ui.systemLine(text, kind);
}

export function onWelcome(ctx, f) {
  const { S } = ctx;
  if (f.user && f.user !== S.me) { S.me = f.user; ctx.ui.setMe(f.user); }
  S.resumed = !!f.resumed;
  S.welcomes += 1;
  // A page asked for on the old socket will never be answered.
  if (S.loadingOlder) { S.loadingOlder = false; ctx.ui.renderOlder(); }
}

export function onHistory(ctx, f) {
  const { S } = ctx;
  const msgs = Array.isArray(f.messages) ? f.messages : [];
  const req = f.req || '';
  if (req.startsWith('older:')) {
    if (req !== `older:${S.olderReq}`) return; // a stale page from before a room switch
    olderPage(ctx, msgs, !!f.more);
    return;
  }
  if (req === 'probe' || req === 'after') {
    S.caughtUp = 0;
    for (const m of msgs) onMessage(ctx, m, { live: true, fromHistory: true });
    if (S.caughtUp) ctx.ui.announce(`${S.caughtUp} more new messages`);
    if (f.more && S.lastCursor) S.conn.send({ type: 'history', after: S.lastCursor, limit: 100, req: 'after' });
    return;
  }
  // The page that follows `welcome` (or a reload of the latest page): the
  // latest, or everything since our cursor. `resumed: false` after a
  // reconnect with a cursor means the server could not honour `since`: the
  // page is the latest 50 with an unknown gap before it, so the view starts
  // over from it and says so, instead of gluing it under the old messages.
  // (Without a cursor there was nothing to resume: nothing is cleared.)
  const gap = S.joinedOnce && !S.resumed && req === '' && !!S.lastCursor;
  if (gap) clearView(ctx);
  const first = !S.joinedOnce;
  S.joinedOnce = true;
  const wasBottom = ctx.ui.atBottom();
  S.caughtUp = 0;
  if (gap) { systemLine(ctx, GAP_TEXT, 'gap'); ctx.ui.announce(GAP_TEXT); }
  for (const m of msgs) onMessage(ctx, m, { live: !first, fromHistory: true });
  if (S.caughtUp) {
    ctx.ui.announce(S.caughtUp === 1 ? '1 new message while you were away' : `${S.caughtUp} new messages while you were away`);
  }
  if (first) {
    if (msgs.length) S.oldestCursor = msgs[0].cursor;
    S.moreOlder = !!f.more;
    ctx.ui.renderOlder();
    ctx.ui.scrollToBottom();
  } else {
    if (S.resumed && f.more && S.lastCursor) {
      S.conn.send({ type: 'history', after: S.lastCursor, limit: 100, req: 'after' });
    }
    if (wasBottom) ctx.ui.scrollToBottom();
  }
  outboxToView(ctx, req !== 'latest');
}

function olderPage(ctx, msgs, more) {
  const { S } = ctx;
  const fresh = [];
  for (const m of msgs) {
    if (S.msgs.has(m.id) || (m.room && m.room !== S.room)) continue;
    fresh.push(newEntry(ctx, m));
  }
  S.order = [...fresh.map((e) => e.id), ...S.order];
  ctx.ui.insertOlder(fresh);
  for (const e of fresh) track(ctx, e, e.m);
  if (msgs.length) S.oldestCursor = msgs[0].cursor;
  S.moreOlder = more;
  S.loadingOlder = false;
  trimNewest(ctx);
  ctx.ui.renderOlder();
}

/** Empty the view (not the outbox, not `lastCursor`). */
export function clearView(ctx) {
  const { S } = ctx;
  S.msgs.clear();
  S.order = [];
  S.visibleUnseen.clear();
  S.oldestCursor = null;
  S.moreOlder = false;
  S.newerTrimmed = false;
  S.marker = false;
  S.markerAt = null;
  S.unread = 0;
  S.joinedOnce = false;
  S.sys = [];
  ctx.ui.clearMessages();
  ctx.ui.showUnread(0);
}

/** "Jump to latest" after paging dropped the newest: ask for the latest page again. */
export function reloadLatest(ctx) {
  const { S } = ctx;
  if (!S.conn || !S.conn.open) return false;
  clearView(ctx);
  S.conn.send({ type: 'history', limit: 50, req: 'latest' });
  return true;
}

// Unsaved messages of this room are shown and (after a welcome) go out
// again with the same ids: the server stores an id once and answers a
// duplicate with `saved`.
export function outboxToView(ctx, send = true) {
  const { S } = ctx;
  for (const o of [...S.outbox.values()]) {
    if (o.user !== S.me) { S.outbox.delete(o.id); ctx.saveOutbox(); continue; } // someone else's, from before a re-login
    if (o.room !== S.room) continue;
    if (!S.msgs.has(o.id)) addPending(ctx, o);
    if (send) S.conn.send(o.frame);
  }
}

function newEntry(ctx, m) {
  const entry = { id: m.id, own: m.sender === ctx.S.me, status: null, detail: null, m };
  ctx.S.msgs.set(m.id, entry);
  return entry;
}

export function onMessage(ctx, m, { live, fromHistory = false }) {
  const { S, ui } = ctx;
  if (!m || !m.id) return;
  if (m.room && m.room !== S.room) return;
  if (m.cursor) S.lastCursor = m.cursor;
  const own = m.sender === S.me;
  let entry = S.msgs.get(m.id);
  if (entry) {
    entry.m = m;
    ui.updateMessage(entry);
  } else if (S.newerTrimmed) {
    // Not in view (the reader paged far back); counted, acked, reloaded on "jump".
    if (!own) { ackDelivered(ctx, m.id); S.unread += 1; ui.showUnread(S.unread, true); }
    if (!own && live) ui.incoming(m);
    return;
  } else {
    const wasBottom = ui.atBottom();
    entry = newEntry(ctx, m);
    const unseen = live && !own && (!wasBottom || !ui.visible());
    const marker = unseen && !S.marker;
    if (marker) { S.marker = true; S.markerAt = m.id; } // where a room shown again puts it
    S.order.push(m.id);
    ui.appendMessage(entry, { marker });
    if (live && !own) {
      ui.incoming(m); // the tab title's count, a desktop notification
      if (fromHistory) {
        S.caughtUp += 1; // announced as one summary after the page
      } else {
        const who = m.type === 'private' ? `Private message from ${m.sender}` : m.sender;
        ui.announce(`${who}: ${m.content}`);
      }
    }
    if (unseen) {
      S.unread += 1;
      ui.showUnread(S.unread, false);
    } else if (wasBottom || own) {
      ui.scrollToBottom();
    }
    trimOldest(ctx);
  }
  track(ctx, entry, m);
  // A message from someone ends their typing.
  if (!own && S.typers.delete(m.sender)) ui.renderTyping();
}

// The cap on the list: beyond it the oldest go (paging brings them back).
function trimOldest(ctx) {
  const { S } = ctx;
  const over = S.order.length - S.caps.messages;
  if (over <= 0) return;
  for (const id of S.order.splice(0, over)) dropEntry(ctx, id);
  const oldest = S.order.map((id) => S.msgs.get(id)).find((e) => e && e.m.cursor);
  if (oldest) S.oldestCursor = oldest.m.cursor;
  S.moreOlder = true;
  ctx.ui.renderOlder();
}

// After an older page: the newest go, and "Jump to latest" reloads them.
function trimNewest(ctx) {
  const { S } = ctx;
  const over = S.order.length - S.caps.messages;
  if (over <= 0) return;
  for (const id of S.order.splice(S.order.length - over, over)) dropEntry(ctx, id);
  S.newerTrimmed = true;
  S.marker = false;
  S.markerAt = null;
  ctx.ui.showUnread(S.unread, true);
}

function dropEntry(ctx, id) {
  ctx.S.msgs.delete(id);
  ctx.S.visibleUnseen.delete(id);
  ctx.ui.removeMessage(id);
}

function ackDelivered(ctx, id) {
  const { S } = ctx;
  if (S.ackedDelivered.has(id) || S.ackedSeen.has(id)) return;
  rememberId(S.ackedDelivered, id, S.caps.acked);
  if (S.conn) S.conn.ack(id, 'delivered');
}

// Own messages: the status history reports. Others': `delivered` now (once
// per tab), `seen` when it is on screen.
function track(ctx, entry, m) {
  const { S } = ctx;
  if (entry.own) {
    if (m.status && RANK[m.status] >= RANK.saved) markSaved(ctx, m.id);
    if (m.status) setStatus(ctx, entry, m.status);
    return;
  }
  ackDelivered(ctx, m.id);
  if (S.ackedSeen.has(m.id)) ctx.ui.seenSent(m.id);
  else ctx.ui.observeSeen(m.id);
}

/** Called for the ids on screen (visible tab): `seen` once per id. */
export function ackSeen(ctx, ids) {
  const { S } = ctx;
  for (const id of ids) {
    const entry = S.msgs.get(id);
    S.visibleUnseen.delete(id);
    if (!entry || entry.own || S.ackedSeen.has(id)) continue;
    rememberId(S.ackedSeen, id, S.caps.acked);
    S.conn.ack(id, 'seen');
    ctx.ui.seenSent(id);
  }
}

export function setStatus(ctx, entry, status, detail) {
  if (!entry || !entry.own) return;
  if (status !== 'failed' && entry.status && entry.status !== 'failed'
      && RANK[status] <= RANK[entry.status]) return;
  entry.status = status;
  entry.detail = detail || null;
  ctx.ui.renderStatus(entry);
}

export function markSaved(ctx, id) {
  ctx.S.strikes.delete(id);
  if (ctx.S.outbox.delete(id)) ctx.saveOutbox();
}

export function onReceipt(ctx, f) {
  if (f.status === 'saved') markSaved(ctx, f.id);
  const entry = ctx.S.msgs.get(f.id);
  if (entry && RANK[f.status] !== undefined) setStatus(ctx, entry, f.status);
}

export function onError(ctx, f) {
  const { S, ui } = ctx;
  if (f.code === 'rate_limited') {
    // Something was dropped; unsaved messages go again once the wait is over.
    ctx.timers.setTimeout(() => {
      if (S.conn && S.conn.open) for (const o of S.outbox.values()) if (o.room === S.room) S.conn.send(o.frame);
    }, (Number(f.retry_after_ms) || 1000) + 100);
    return;
  }
  const entry = f.id ? S.msgs.get(f.id) : null;
  if (f.id && S.outbox.has(f.id)) {
    if (f.code === 'unavailable') {
      const o = S.outbox.get(f.id);
      ctx.timers.setTimeout(() => { if (S.conn && S.outbox.has(o.id)) S.conn.send(o.frame); }, Number(f.retry_after_ms) || 1000);
      return;
    }
    S.outbox.delete(f.id);
    ctx.saveOutbox();
  }
  if (f.code === 'unknown_command' && entry) {
    S.msgs.delete(f.id);
    S.order = S.order.filter((id) => id !== f.id);
    ui.removeMessage(f.id);
    systemLine(ctx, f.message || 'Unknown command. Type /help for the list.', 'error');
    return;
  }
  if (entry) {
    setStatus(ctx, entry, 'failed', f.message || f.code);
    return;
  }
  systemLine(ctx, f.message || f.code, 'error');
}

/**
 * The socket closed with 1009: `frame` (the biggest it carried) was over the
 * server's limit. Resending it would close the next socket too, forever, so
 * it leaves the outbox and its message shows as not sent.
 */
export function onTooBig(ctx, frame, bytes) {
  const { S } = ctx;
  if (!frame || !frame.id) return;
  if (S.outbox.delete(frame.id)) ctx.saveOutbox();
  const entry = S.msgs.get(frame.id);
  const max = (S.conn && S.conn.limits && S.conn.limits.max_frame) || DEFAULT_LIMITS.max_frame;
  const why = `too long for the server (${bytes ?? '?'} bytes; at most ${max})`;
  if (entry) setStatus(ctx, entry, 'failed', why);
  else systemLine(ctx, `A message was not sent: ${why}.`, 'error');
}

export const SUSPECT_STRIKES = 3;

/**
 * The socket died without a close frame (1006) with `frame` sent and not
 * answered. Once is a network blip; the same message each time, SUSPECT_STRIKES
 * times in a row, is a frame the server keeps refusing (its 1009 lost on the
 * way): it fails like a 1009 instead of looping.
 */
export function onSuspect(ctx, frame, bytes) {
  const { S } = ctx;
  for (const id of S.strikes.keys()) if (!S.outbox.has(id)) S.strikes.delete(id); // saved or failed since
  if (!frame || !frame.id || !S.outbox.has(frame.id)) return;
  const n = (S.strikes.get(frame.id) || 0) + 1;
  if (n < SUSPECT_STRIKES) { S.strikes.set(frame.id, n); return; }
  S.strikes.delete(frame.id);
  S.outbox.delete(frame.id);
  ctx.saveOutbox();
  const why = `the connection dropped each time it was sent (${bytes ?? '?'} bytes: too long for the server?)`;
  const entry = S.msgs.get(frame.id);
  if (entry) setStatus(ctx, entry, 'failed', why);
  else systemLine(ctx, `A message was not sent: ${why}.`, 'error');
}

export function onTyping(ctx, f) {
  const { S } = ctx;
  if (!f.sender || f.sender === S.me) return;
  if (f.active) S.typers.set(f.sender, ctx.timers.now() + TYPING_EXPIRE_MS);
  else S.typers.delete(f.sender);
  ctx.ui.renderTyping();
}

/** The typing line for the names whose indicator has not expired. */
export function typingText(S, now) {
  for (const [u, exp] of S.typers) if (exp <= now) S.typers.delete(u);
  const names = [...S.typers.keys()].sort();
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]} are typing…`;
  if (names.length > 3) return `${names[0]}, ${names[1]} and ${names.length - 2} others are typing…`;
  return '';
}

export function onPresence(ctx, f) {
  const { S } = ctx;
  S.presence = Array.isArray(f.users) ? f.users : [];
  ctx.ui.renderPresence(S.presence, f.count ?? S.presence.length);
  let changed = false;
  for (const u of S.typers.keys()) if (!S.presence.includes(u)) { S.typers.delete(u); changed = true; }
  if (changed) ctx.ui.renderTyping();
}

// ---------- sending ----------

export function parseCommand(text) {
  const m = /^\/(\S+)(?:\s+([\s\S]*))?$/.exec(text);
  if (!m) return null;
  return { word: m[1].toLowerCase(), rest: (m[2] || '').trim() };
}

/**
 * What the composer's text becomes: `{error}`, `{frame}` (a command with a
 * reply only, nothing to track) or `{frame, o}` (an outbox entry). The
 * server limits the whole frame in UTF-8 BYTES (`max_frame`), so the encoded
 * frame is measured: ~2 700 CJK characters are under 4000 characters but
 * over 8 KiB.
 */
export function outgoing(S, raw, id, ts) {
  const text = raw.trim();
  if (!text) return { error: null };
  const limits = { ...DEFAULT_LIMITS, ...((S.conn && S.conn.limits) || {}) };
  if ([...text].length > limits.max_content) {
    return { error: `Messages are at most ${limits.max_content} characters.` };
  }
  const cmd = text.startsWith('/') ? parseCommand(text) : null;
  let frame; let kind = 'chat'; let target; let display = text; let local = false;
  if (S.pmTarget) {
    frame = { type: 'private', id, target: S.pmTarget, content: text };
    kind = 'private'; target = S.pmTarget;
  } else {
    frame = { type: 'chat', id, content: text };
    local = !!(cmd && LOCAL_COMMANDS.has(cmd.word));
    if (cmd && cmd.word === 'msg') {
      const pm = /^(\S+)\s+([\s\S]+)$/.exec(cmd.rest);
      if (pm) { kind = 'private'; target = pm[1]; display = pm[2].trim(); }
    }
  }
  const bytes = utf8Bytes(JSON.stringify(frame));
  if (bytes > limits.max_frame) {
    return {
      error: `This message is too long to send: ${bytes} bytes once encoded, and the server takes at most ${limits.max_frame}. Shorten it or split it.`,
    };
  }
  if (local) return { frame };
  const o = { id, user: S.me, room: S.room, frame, kind, target, display, ts };
  return { frame, o };
}

/** Show an outbox entry as a pending message at the bottom. */
export function addPending(ctx, o) {
  const { S } = ctx;
  // Paged far back: the latest page is fetched first, and the entry is
  // shown under it (outboxToView) or comes with it once saved.
  if (S.newerTrimmed && reloadLatest(ctx)) return null;
  const m = {
    id: o.id, room: o.room, sender: S.me, content: o.display, type: o.kind,
    target: o.target, ts: o.ts,
  };
  const entry = newEntry(ctx, m);
  S.order.push(o.id);
  ctx.ui.appendMessage(entry, { marker: false });
  setStatus(ctx, entry, 'pending');
  trimOldest(ctx);
  return entry;
}

/** Queue an outbox entry: persisted, shown, sent. */
export function sendOutbox(ctx, o) {
  const { S } = ctx;
  S.outbox.set(o.id, o);
  ctx.saveOutbox();
  if (S.marker) { S.marker = false; S.markerAt = null; ctx.ui.clearMarker(); }
  addPending(ctx, o);
  ctx.ui.scrollToBottom();
  S.conn.send(o.frame);
}
