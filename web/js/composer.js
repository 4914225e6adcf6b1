// The message box: sending (through protocol.outgoing, which checks the
// limits) and our own typing indicator.

import { outgoing, sendOutbox, systemLine } from './protocol.js';
import { uuid } from './util.js';
import { $ } from './render.js';

const TYPING_RESEND_MS = 3000;   // an `active: true` at most every 3 s (server allows 2/s)
const TYPING_IDLE_MS = 5000;     // stop typing after 5 s without a key
const TYPING_GAP_MS = 650;       // between any two typing frames

export function createComposer(ctx) {
  const { S } = ctx;
  const T = { active: false, sentAt: 0, idle: null, want: false, frameAt: 0, timer: null };

  function stopTyping() {
    T.active = false;
    clearTimeout(T.idle);
    clearTimeout(T.timer); // a message ends typing for everyone who sees it
    T.timer = null;
  }

  function sendText(raw) {
    if (!S.conn) return false;
    const r = outgoing(S, raw, uuid(), new Date().toISOString());
    if (r.error !== undefined) {
      if (r.error) systemLine(ctx, r.error, 'error');
      return false;
    }
    if (r.o) sendOutbox(ctx, r.o);
    else S.conn.send(r.frame); // replies only: nothing stored, nothing to track
    stopTyping();
    return true;
  }

  // The server forwards at most one typing frame per user every 500 ms and
  // drops the rest, so frames are spaced out here and the latest state wins.
  function sendTyping(active) {
    T.want = active;
    const wait = T.frameAt + TYPING_GAP_MS - Date.now();
    if (wait > 0) {
      if (!T.timer) T.timer = setTimeout(flushTyping, wait);
      return;
    }
    flushTyping();
  }

  function flushTyping() {
    T.timer = null;
    if (!S.conn || !S.conn.open) return;
    S.conn.send({ type: 'typing', active: T.want });
    T.frameAt = Date.now();
  }

  function onInput() {
    const input = $('composer-input');
    if (!S.conn || !S.conn.open) return;
    const now = Date.now();
    if (!input.value.trim()) {
      if (T.active) { sendTyping(false); T.active = false; }
      clearTimeout(T.idle);
      return;
    }
    if (!T.active || now - T.sentAt > TYPING_RESEND_MS) {
      sendTyping(true);
      T.active = true;
      T.sentAt = now;
    }
    clearTimeout(T.idle);
    T.idle = setTimeout(() => {
      if (T.active) { sendTyping(false); T.active = false; }
    }, TYPING_IDLE_MS);
  }

  function onSubmit(ev) {
    ev.preventDefault();
    const input = $('composer-input');
    if (sendText(input.value)) input.value = '';
    input.focus();
  }

  return { sendText, onInput, onSubmit, reset: stopTyping };
}
