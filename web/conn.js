// One WebSocket for the current room: connecting, reconnecting with
// exponential backoff and jitter, a watchdog for dead sockets, a client-side
// token bucket that keeps us under the server's per-connection frame limit,
// and batched receipts (`ack` with `ids`).

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const SILENCE_MS = 45_000;     // the server pings every 15 s; browsers hide pings
const PROBE_TIMEOUT_MS = 10_000;
const WATCHDOG_EVERY_MS = 5_000;
const ACK_FLUSH_MS = 300;
const MAX_ACK_IDS = 100;

export const CLOSE = {
  NORMAL: 1000, GOING_AWAY: 1001, POLICY: 1008, TOO_BIG: 1009,
  REPLACED: 4001, EVICTED: 4002,
};

export function backoffDelay(attempt) {
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 10));
  // "equal jitter": half fixed, half random, so retries never bunch up at 0.
  return Math.round(cap / 2 + Math.random() * (cap / 2));
}

export class Connection {
  /**
   * @param {object} o
   * @param {string} o.room
   * @param {string} o.clientId
   * @param {() => (string|null)} o.since      last cursor seen in this room
   * @param {(f: object) => void} o.onFrame    every server frame
   * @param {(state: string, info?: object) => void} o.onState
   * @param {() => Promise<'ok'|'unauthorized'|'error'>} o.refreshAuth
   * @param {number} [o.silenceMs]  watchdog: silence before a probe (45 s)
   * @param {number} [o.probeMs]    watchdog: wait for the probe's answer (10 s)
   */
  constructor(o) {
    this.silenceMs = SILENCE_MS;
    this.probeMs = PROBE_TIMEOUT_MS;
    Object.assign(this, o);
    this.ws = null;
    this.state = 'idle';
    this.attempt = 0;
    this.stopped = false;
    this.retryTimer = null;
    this.lastTraffic = Date.now();
    this.probeAt = 0;
    this.queue = [];
    this.limits = { msgs_per_sec: 10, burst: 20 };
    this.tokens = 0;
    this.tokensAt = Date.now();
    this.pausedUntil = 0;
    this.pumpTimer = null;
    this.acks = { delivered: new Set(), seen: new Set() };
    this.ackTimer = null;
    this.onOffline = () => this.wentOffline();
    this.onOnline = () => this.cameOnline();
    window.addEventListener('offline', this.onOffline);
    window.addEventListener('online', this.onOnline);
    this.watchdog = setInterval(() => this.checkAlive(),
      Math.min(WATCHDOG_EVERY_MS, Math.max(250, this.silenceMs / 4)));
  }

  setState(state, info = {}) {
    this.state = state;
    this.onState(state, info);
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = new URLSearchParams({ room: this.room, client: this.clientId });
    const since = this.since();
    if (since) q.set('since', since);
    return `${proto}//${location.host}/ws?${q}`;
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (!navigator.onLine) {
      this.setState('offline');
      return;
    }
    this.detach();
    this.setState(this.attempt === 0 && this.state === 'idle' ? 'connecting' : 'reconnecting',
      { attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (e) {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    let welcomed = false;
    ws.onopen = () => { this.lastTraffic = Date.now(); };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastTraffic = Date.now();
      this.probeAt = 0;
      let f;
      try { f = JSON.parse(ev.data); } catch { return; }
      if (f.type === 'welcome') {
        welcomed = true;
        this.attempt = 0;
        if (f.limits) this.limits = f.limits;
        // Keep a margin below the server's bucket: it counts every frame.
        this.tokens = Math.max(1, (this.limits.burst || 1) - 2);
        this.tokensAt = Date.now();
        this.setState('online', { welcome: f });
      }
      if (f.type === 'error' && f.code === 'rate_limited') {
        this.pause(Number(f.retry_after_ms) || 1000);
      }
      this.onFrame(f);
      if (f.type === 'welcome') { this.pump(); this.scheduleAckFlush(); }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.queue = [];
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
    if (!navigator.onLine) {
      this.setState('offline');
      return;
    }
    if (code === CLOSE.POLICY || !welcomed) {
      // 1008: the access token expired. A refused upgrade (no welcome)
      // looks like 1006 to a browser: the cause may be a 401, so check.
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
    const at = Date.now() + delay;
    if (reason !== 'evicted') this.setState('reconnecting', { attempt: this.attempt, at });
    else this.setState('evicted', { attempt: this.attempt, at });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  // Used by "Reconnect" buttons and the `online` event: try now.
  reconnectNow() {
    this.stopped = false;
    this.attempt = 0;
    this.connect();
  }

  wentOffline() {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
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
    const now = Date.now();
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
      this.sendNow(f);
    }
  }

  detach() {
    const ws = this.ws;
    this.ws = null;
    this.queue = [];
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000, 'client closing'); } catch { /* already closed */ }
    }
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.pumpTimer);
    clearTimeout(this.ackTimer);
    clearInterval(this.watchdog);
    window.removeEventListener('offline', this.onOffline);
    window.removeEventListener('online', this.onOnline);
    this.detach();
  }

  get open() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN && this.state === 'online';
  }

  // ---- rate-limited sending ----

  pause(ms) {
    this.pausedUntil = Date.now() + ms;
    this.tokens = 0;
    this.tokensAt = this.pausedUntil;
    clearTimeout(this.pumpTimer);
    this.pumpTimer = setTimeout(() => this.pump(), ms + 50);
  }

  refill() {
    const now = Date.now();
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

  sendNow(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  pump() {
    clearTimeout(this.pumpTimer);
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
      const wait = Math.max(50, this.pausedUntil - Date.now(), ((1 - this.tokens) / rate) * 1000);
      this.pumpTimer = setTimeout(() => this.pump(), wait);
    }
  }

  // ---- receipts, batched ----

  ack(id, status) {
    this.acks[status].add(id);
    this.scheduleAckFlush();
  }

  scheduleAckFlush() {
    if (this.ackTimer) return;
    if (!this.acks.delivered.size && !this.acks.seen.size) return;
    this.ackTimer = setTimeout(() => { this.ackTimer = null; this.flushAcks(); }, ACK_FLUSH_MS);
  }

  flushAcks() {
    if (!this.open) return; // kept until the next welcome
    // Don't let receipts crowd out chat: at most half the bucket per flush.
    for (const status of ['delivered', 'seen']) {
      const set = this.acks[status];
      while (set.size) {
        if (this.queue.length > 4) { this.scheduleAckFlush(); return; }
        const ids = [...set].slice(0, MAX_ACK_IDS);
        ids.forEach((id) => set.delete(id));
        this.send({ type: 'ack', ids, status });
      }
    }
  }
}
