// One WebSocket, for one room (`room`) or for all the user's rooms (`multi`:
// `/ws?multi=1`, the page subscribes to its rooms after each welcome and
// names the room in every frame; receipts are batched per room): connecting, reconnecting with
// exponential backoff and jitter, a watchdog for dead sockets, a client-side
// token bucket that keeps us under the server's per-connection frame limit,
// batched receipts (`ack` with `ids`), and the frame-size limit in bytes.
// In a cluster (`nodes`, a NodeList) the socket goes to the node in use, the
// list is refreshed on every welcome and every 30 s while online, and a
// socket closed with 1001 or one that fails to open (network error, 503)
// sends the next attempt to the next node, with the usual backoff, resuming
// with `since`. Before each socket the NodeList's route is asked where the
// user's home node is (a browser cannot follow the 307 a non-home node
// answers the upgrade with), and the socket goes there.
//
// Seams for node's unit tests: `WebSocket` (the constructor), `timers`
// (now/setTimeout/.../clearInterval), `env` (online state, `online`/`offline`
// events, the page's location). The browser uses the globals.

import { realTimers, utf8Bytes } from './util.js';

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const SILENCE_MS = 45_000;     // the server pings every 15 s; browsers hide pings
const PROBE_TIMEOUT_MS = 10_000;
const WATCHDOG_EVERY_MS = 5_000;
const ACK_FLUSH_MS = 300;
const MAX_ACK_IDS = 100;
const NODES_EVERY_MS = 30_000; // the cluster's node list, while online
const OPEN = 1;                // WebSocket.OPEN

export const CLOSE = {
  NORMAL: 1000, GOING_AWAY: 1001, ABNORMAL: 1006, POLICY: 1008, TOO_BIG: 1009,
  REPLACED: 4001, EVICTED: 4002,
};

export function backoffDelay(attempt, random = Math.random) {
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 10));
  // "equal jitter": half fixed, half random, so retries never bunch up at 0.
  return Math.round(cap / 2 + random() * (cap / 2));
}

function browserEnv() {
  return {
    onLine: () => navigator.onLine,
    on: (ev, fn) => window.addEventListener(ev, fn),
    off: (ev, fn) => window.removeEventListener(ev, fn),
    location: () => location,
  };
}

export class Connection {
  /**
   * @param {object} o
   * @param {string} [o.room]   the room of a single-room socket
   * @param {boolean} [o.multi] a multi-room socket (`multi=1`; no room, no `since`)
   * @param {() => (string|null)} [o.probeRoom]  multi: the room the watchdog's probe asks
   * @param {string} o.clientId
   * @param {() => (string|null)} o.since      last cursor seen in this room
   * @param {(f: object) => void} o.onFrame    every server frame
   * @param {(state: string, info?: object) => void} o.onState
   * @param {() => Promise<'ok'|'unauthorized'|'error'>} o.refreshAuth
   * @param {(frame: object, bytes: number) => void} [o.onTooBig]  a frame over
   *        `max_frame`: refused before sending, or the biggest unanswered one a 1009 close followed
   * @param {(frame: object, bytes: number) => void} [o.onSuspect]  the biggest
   *        unanswered message when a socket dies without a close frame (1006)
   * @param {number} [o.silenceMs]  watchdog: silence before a probe (45 s)
   * @param {number} [o.probeMs]    watchdog: wait for the probe's answer (10 s)
   * @param {import('./nodes.js').NodeList} [o.nodes]  the cluster's nodes
   *        (absent, or without a list: the page's origin, as on a single node)
   * @param {Function} [o.WebSocket] @param {object} [o.timers] @param {object} [o.env]
   */
  constructor(o) {
    this.silenceMs = SILENCE_MS;
    this.probeMs = PROBE_TIMEOUT_MS;
    this.onTooBig = () => {};
    this.onSuspect = () => {};
    this.WebSocket = globalThis.WebSocket;
    this.timers = realTimers;
    Object.assign(this, o);
    if (!this.env) this.env = browserEnv();
    const t = this.timers;
    this.ws = null;
    this.tries = 0;
    this.state = 'idle';
    this.attempt = 0;
    this.stopped = false;
    this.renewing = false;
    this.retryTimer = null;
    this.lastTraffic = t.now();
    this.probeAt = 0;
    this.nodesAt = 0;
    this.queue = [];
    this.limits = { msgs_per_sec: 10, burst: 20, max_frame: 8192 };
    this.tokens = 0;
    this.tokensAt = t.now();
    this.pausedUntil = 0;
    this.pumpTimer = null;
    this.acks = { delivered: new Set(), seen: new Set() };
    this.ackTimer = null;
    // Messages sent on this socket that the server has not yet answered
    // (echo, receipt or error with their id): id -> {frame, bytes}.
    this.unanswered = new Map();
    this.onOffline = () => this.wentOffline();
    this.onOnline = () => this.cameOnline();
    this.env.on('offline', this.onOffline);
    this.env.on('online', this.onOnline);
    this.watchdog = t.setInterval(() => this.checkAlive(),
      Math.min(WATCHDOG_EVERY_MS, Math.max(250, this.silenceMs / 4)));
  }

  setState(state, info = {}) {
    this.state = state;
    this.onState(state, info);
  }

  /** The socket's URL: `routed` (a route answer's) as given, else the node in use's. */
  url(routed = null) {
    // batch=1: the server may join queued frames into one, a line each (see onmessage).
    const q = this.multi
      ? new URLSearchParams({ multi: '1', client: this.clientId, batch: '1' })
      : new URLSearchParams({ room: this.room, client: this.clientId, batch: '1' });
    const since = this.multi ? null : this.since();
    if (since) q.set('since', since);
    if (routed) {
      const u = new URL(routed);
      u.search = q.toString();
      return u.href;
    }
    // The node in use, or (single node, or none chosen yet) the page's own.
    const at = this.nodes && this.nodes.current ? new URL(this.nodes.current.url) : this.env.location();
    const proto = at.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${at.host}/ws?${q}`;
  }

  refreshNodes() {
    if (!this.nodes) return;
    this.nodesAt = this.timers.now();
    this.nodes.refresh();
  }

  connect() {
    if (this.stopped) return;
    this.timers.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (!this.env.onLine()) {
      this.renewing = false;
      this.setState('offline');
      return;
    }
    this.detach();
    const quiet = this.attempt === 0 && (this.state === 'idle' || this.renewing);
    this.setState(quiet ? 'connecting' : 'reconnecting', { attempt: this.attempt });
    if (!this.nodes || !this.nodes.routed) {
      this.openSocket(this.url());
      return;
    }
    // The route is asked first; anything that detaches meanwhile (stop, a
    // newer connect, going offline) bumps `tries` and the answer is dropped.
    const tries = this.tries;
    this.nodes.route().then((routed) => {
      if (this.stopped || tries !== this.tries) return;
      this.openSocket(this.url(routed));
    }, () => {
      if (this.stopped || tries !== this.tries) return;
      this.openSocket(this.url());
    });
  }

  openSocket(url) {
    let ws;
    try {
      ws = new this.WebSocket(url);
    } catch (e) {
      this.renewing = false;
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    this.unanswered = new Map();
    let welcomed = false;
    ws.onopen = () => { this.lastTraffic = this.timers.now(); };
    const onFrame = (line) => {
      let f;
      try { f = JSON.parse(line); } catch { return; }
      if (f.id) this.unanswered.delete(f.id);
      if (f.type === 'welcome') {
        welcomed = true;
        this.attempt = 0;
        this.renewing = false;
        if (f.limits) this.limits = { ...this.limits, ...f.limits };
        // Keep a margin below the server's bucket: it counts every frame.
        this.tokens = Math.max(1, (this.limits.burst || 1) - 2);
        this.tokensAt = this.timers.now();
        this.setState('online', { welcome: f });
        this.closeRetired();
        this.refreshNodes();
      }
      if (f.type === 'error' && f.code === 'rate_limited') {
        this.pause(Number(f.retry_after_ms) || 1000);
      }
      this.onFrame(f);
      if (f.type === 'welcome') { this.pump(); this.scheduleAckFlush(); }
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastTraffic = this.timers.now();
      this.probeAt = 0;
      // batch=1: one JSON frame per line (the server's JSON has no raw newline).
      const lines = typeof ev.data === 'string' ? ev.data.split('\n') : [];
      for (const line of lines) {
        // A frame's handler may close or replace the socket: the rest is stale.
        if (this.ws !== ws) return;
        onFrame(line);
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.requeue();
      this.renewing = false;
      this.closeRetired();
      const big = this.biggestUnanswered();
      this.unanswered = new Map();
      // 1009: the server read a frame over its limit; the biggest message it
      // never answered is that frame. 1006 (no close frame): often the same
      // thing, the close frame lost to the TCP reset that follows it while
      // the rest of the big frame was unread; reported as a suspect, the
      // outbox gives up on a message after a few of these in a row.
      if (ev.code === CLOSE.TOO_BIG && big) this.onTooBig(big.frame, big.bytes);
      else if (ev.code === CLOSE.ABNORMAL && big && welcomed && this.env.onLine()) this.onSuspect(big.frame, big.bytes);
      this.closed(ev.code, welcomed);
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  async closed(code, welcomed) {
    if (this.stopped) return;
    if (code === CLOSE.REPLACED) {
      this.setState('replaced');
      return;
    }
    if (!this.env.onLine()) {
      this.setState('offline');
      return;
    }
    // 1001: the node is going away (shutdown, or it lost its majority);
    // no welcome: it refused us (503) or cannot be reached. The next attempt,
    // and the token check below, go to the next node.
    if ((code === CLOSE.GOING_AWAY || !welcomed) && this.nodes) this.nodes.advance();
    if (code === CLOSE.POLICY || !welcomed) {
      // 1008: the access token expired or was revoked. A refused upgrade
      // (no welcome) looks like 1006 to a browser: the cause may be a 401.
      this.setState('reconnecting', { attempt: this.attempt, reason: code === CLOSE.POLICY ? 'token' : 'refused' });
      const r = await this.refreshAuth(code === CLOSE.POLICY);
      if (this.stopped) return;
      if (r === 'unauthorized') { this.stop(); this.setState('signed-out'); return; }
      if (code === CLOSE.POLICY && r === 'ok') { this.connect(); return; }
    }
    if (code === CLOSE.EVICTED) this.setState('evicted');
    this.scheduleRetry(code === CLOSE.EVICTED ? 'evicted' : undefined);
  }

  scheduleRetry(reason) {
    if (this.stopped) return;
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    const at = this.timers.now() + delay;
    if (reason !== 'evicted') this.setState('reconnecting', { attempt: this.attempt, at });
    else this.setState('evicted', { attempt: this.attempt, at });
    this.timers.clearTimeout(this.retryTimer);
    this.retryTimer = this.timers.setTimeout(() => this.connect(), delay);
  }

  // Used by "Reconnect" buttons and the `online` event: try now.
  reconnectNow() {
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  /**
   * A planned reconnect after the access token was refreshed: the open socket
   * carries the old token and would be closed with 1008 at its expiry. The
   * new socket resumes with `since`, so nothing is missed. The old one is
   * left open until the new one is welcomed: the server replaces it (same
   * client id), which, unlike a close and a new join, shows the others no
   * leave and join lines.
   */
  renew() {
    if (this.stopped || this.state !== 'online') return; // a reconnect under way uses the new token anyway
    const old = this.ws;
    this.ws = null;
    this.requeue();
    old.onopen = old.onmessage = old.onclose = old.onerror = null;
    this.retired = old;
    this.renewing = true;
    this.attempt = 0;
    this.connect();
  }

  closeRetired() {
    const old = this.retired;
    this.retired = null;
    if (old) { try { old.close(1000, 'renewed'); } catch { /* already closed */ } }
  }

  wentOffline() {
    if (this.stopped) return;
    this.timers.clearTimeout(this.retryTimer);
    this.detach();
    this.setState('offline');
  }

  cameOnline() {
    if (this.stopped) return;
    if (this.state === 'replaced' || this.state === 'signed-out') return;
    this.attempt = 0;
    this.connect();
  }

  // Missing server traffic: the server pings every 15 s but browsers don't
  // expose pings, so after 45 s of silence one cheap `history` probe goes out
  // (it also catches anything missed); no answer within 10 s = dead socket.
  checkAlive() {
    if (this.stopped || !this.ws || this.state !== 'online') return;
    const now = this.timers.now();
    if (this.nodes && now - this.nodesAt >= NODES_EVERY_MS) this.refreshNodes();
    if (this.probeAt && now - this.probeAt > this.probeMs) {
      this.probeAt = 0;
      this.detach();
      this.scheduleRetry();
      return;
    }
    if (!this.probeAt && now - this.lastTraffic > this.silenceMs) {
      this.probeAt = now;
      const since = this.since();
      const f = { type: 'history', limit: 1, req: 'probe' };
      if (since) f.after = since;
      if (this.multi) {
        f.room = this.probeRoom ? this.probeRoom() : null;
        if (!f.room) return; // nothing subscribed yet: nothing to ask
      }
      this.sendNow(f);
    }
  }

  // Frames queued for a socket that is gone: chat and private messages are
  // resent from the outbox after the next welcome, typing and history
  // requests are stale, but receipts would be lost (their ids are no longer
  // in `acks`), so those go back to be sent on the next socket.
  requeue() {
    for (const f of this.queue) {
      if (f.type !== 'ack' || !this.acks[f.status]) continue;
      for (const id of f.ids || [f.id]) this.acks[f.status].add(f.room ? `${f.room}\n${id}` : id);
    }
    this.queue = [];
  }

  detach() {
    this.tries += 1; // a route answer on its way is for an attempt that is over
    const ws = this.ws;
    this.ws = null;
    this.requeue();
    this.unanswered = new Map();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000, 'client closing'); } catch { /* already closed */ }
    }
  }

  stop() {
    this.stopped = true;
    this.closeRetired();
    const t = this.timers;
    t.clearTimeout(this.retryTimer);
    t.clearTimeout(this.pumpTimer);
    t.clearTimeout(this.ackTimer);
    t.clearInterval(this.watchdog);
    this.env.off('offline', this.onOffline);
    this.env.off('online', this.onOnline);
    this.detach();
  }

  get open() {
    return !!this.ws && this.ws.readyState === OPEN && this.state === 'online';
  }

  biggestUnanswered() {
    let big = null;
    for (const u of this.unanswered.values()) if (!big || u.bytes > big.bytes) big = u;
    return big;
  }

  // ---- rate-limited sending ----

  pause(ms) {
    this.pausedUntil = this.timers.now() + ms;
    this.tokens = 0;
    this.tokensAt = this.pausedUntil;
    this.timers.clearTimeout(this.pumpTimer);
    this.pumpTimer = this.timers.setTimeout(() => this.pump(), ms + 50);
  }

  refill() {
    const now = this.timers.now();
    if (now < this.pausedUntil) return;
    const rate = Math.max(0.5, (this.limits.msgs_per_sec || 1) * 0.8);
    const cap = Math.max(1, (this.limits.burst || 1) - 2);
    this.tokens = Math.min(cap, this.tokens + ((now - this.tokensAt) / 1000) * rate);
    this.tokensAt = now;
  }

  // Queue a frame; `typing` frames are dropped rather than queued behind others.
  send(frame) {
    if (frame.type === 'typing') {
      this.queue = this.queue.filter((f) => f.type !== 'typing');
    }
    this.queue.push(frame);
    this.pump();
  }

  // A frame over the server's `max_frame` (bytes) would be answered with a
  // 1009 close, and resending it after the reconnect would loop: it is
  // refused here and reported instead. Returns false only when there is no
  // open socket (the frame stays queued).
  sendNow(frame) {
    if (!this.ws || this.ws.readyState !== OPEN) return false;
    const text = JSON.stringify(frame);
    const bytes = utf8Bytes(text);
    if (this.limits.max_frame && bytes > this.limits.max_frame) {
      this.onTooBig(frame, bytes);
      return true;
    }
    if (frame.id && (frame.type === 'chat' || frame.type === 'private')) this.unanswered.set(frame.id, { frame, bytes });
    this.ws.send(text);
    return true;
  }

  pump() {
    this.timers.clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    if (!this.open) return;
    this.refill();
    while (this.queue.length && this.tokens >= 1) {
      const f = this.queue.shift();
      if (!this.sendNow(f)) { this.queue.unshift(f); return; }
      this.tokens -= 1;
    }
    if (this.queue.length) {
      const rate = Math.max(0.5, (this.limits.msgs_per_sec || 1) * 0.8);
      const wait = Math.max(50, this.pausedUntil - this.timers.now(), ((1 - this.tokens) / rate) * 1000);
      this.pumpTimer = this.timers.setTimeout(() => this.pump(), wait);
    }
  }

  // ---- receipts, batched ----

  // `room` on a multi-room socket: kept as "room\nid" (neither has a newline).
  ack(id, status, room) {
    this.acks[status].add(room ? `${room}\n${id}` : id);
    this.scheduleAckFlush();
  }

  /** A room left (multi-room): its batched receipts would only be refused (`not_subscribed`). */
  forgetRoom(room) {
    for (const set of Object.values(this.acks)) {
      for (const k of [...set]) if (k.startsWith(`${room}\n`)) set.delete(k);
    }
  }

  scheduleAckFlush() {
    if (this.ackTimer) return;
    if (!this.acks.delivered.size && !this.acks.seen.size) return;
    this.ackTimer = this.timers.setTimeout(() => { this.ackTimer = null; this.flushAcks(); }, ACK_FLUSH_MS);
  }

  flushAcks() {
    if (!this.open) return; // kept until the next welcome
    // Don't let receipts crowd out chat: at most half the bucket per flush.
    for (const status of ['delivered', 'seen']) {
      const set = this.acks[status];
      while (set.size) {
        if (this.queue.length > 4) { this.scheduleAckFlush(); return; }
        // One frame per room: the first key's room, up to MAX_ACK_IDS of its ids.
        const first = set.values().next().value;
        const nl = first.indexOf('\n');
        const room = nl < 0 ? null : first.slice(0, nl);
        const keys = [];
        for (const k of set) {
          const r = k.indexOf('\n') < 0 ? null : k.slice(0, k.indexOf('\n'));
          if (r === room) keys.push(k);
          if (keys.length === MAX_ACK_IDS) break;
        }
        keys.forEach((k) => set.delete(k));
        const ids = room === null ? keys : keys.map((k) => k.slice(room.length + 1));
        this.send(room === null ? { type: 'ack', ids, status } : { type: 'ack', room, ids, status });
      }
    }
  }
}
