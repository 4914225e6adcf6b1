// Test doubles for the client's seams: a clock whose time moves only when
// told, a WebSocket driven by the test, the page's environment, and a `ui`
// that records what the protocol handlers asked the page to do.

export const T0 = Date.parse('2026-01-01T00:00:00Z');

export class FakeClock {
  constructor(start = T0) { this.t = start; this.seq = 0; this.jobs = new Map(); }
  now() { return this.t; }
  setTimeout(fn, ms) { const id = ++this.seq; this.jobs.set(id, { at: this.t + Math.max(0, ms || 0), fn }); return id; }
  clearTimeout(id) { this.jobs.delete(id); }
  setInterval(fn, ms) {
    const id = ++this.seq;
    const tick = () => { this.jobs.set(id, { at: this.t + ms, fn: () => { tick(); fn(); } }); };
    tick();
    return id;
  }
  clearInterval(id) { this.jobs.delete(id); }
  /** Moves time forward, running every job that falls due, in order. */
  async advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const [id, j] of this.jobs) if (j.at <= end && (!next || j.at < next[1].at)) next = [id, j];
      if (!next) break;
      this.jobs.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
  get timers() {
    return {
      now: () => this.now(),
      setTimeout: (f, ms) => this.setTimeout(f, ms),
      clearTimeout: (id) => this.clearTimeout(id),
      setInterval: (f, ms) => this.setInterval(f, ms),
      clearInterval: (id) => this.clearInterval(id),
    };
  }
}

/** Lets pending promise callbacks run. */
export const settle = () => new Promise((r) => setImmediate(r));

export function fakeSockets() {
  const all = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = new URL(url);
      this.readyState = 0;
      this.sent = [];
      this.closedByClient = null;
      all.push(this);
    }
    send(text) { if (this.readyState !== 1) throw new Error('not open'); this.sent.push(JSON.parse(text)); }
    close(code) { this.closedByClient = code ?? 1005; this.readyState = 3; }
    // The server's side:
    open() { this.readyState = 1; this.onopen?.(); }
    recv(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
    // batch=1: several frames in one text frame, a line each.
    recvBatch(frames) { this.onmessage?.({ data: frames.map((f) => JSON.stringify(f)).join('\n') }); }
    welcome(extra = {}) {
      this.open();
      this.recv({ type: 'welcome', user: 'ann', room: 'r', resumed: true,
        limits: { max_frame: 8192, max_content: 4000, msgs_per_sec: 10, burst: 20 }, ...extra });
    }
    serverClose(code) { this.readyState = 3; this.onclose?.({ code }); }
    get last() { return this.sent[this.sent.length - 1]; }
  }
  return { FakeWebSocket, all };
}

export function fakeEnv() {
  return {
    online: true,
    onLine() { return this.online; },
    on() {}, off() {},
    location: () => ({ protocol: 'http:', host: 'chat.test' }),
  };
}

/** A `ui` that records calls by name: ui.calls.appendMessage = [[args], ...]. */
export function recordingUi(over = {}) {
  const calls = {};
  const rec = (name, ret) => (...args) => { (calls[name] ||= []).push(args); return ret; };
  const ui = {
    calls,
    atBottom: () => true,
    visible: () => true,
  };
  for (const n of ['setMe', 'appendMessage', 'insertOlder', 'updateMessage', 'renderStatus', 'removeMessage',
    'clearMessages', 'clearMarker', 'systemLine', 'announce', 'scrollToBottom', 'showUnread', 'observeSeen',
    'seenSent', 'renderTyping', 'renderPresence', 'renderOlder', 'incoming']) ui[n] = rec(n);
  return Object.assign(ui, over);
}

/** A connection double for the protocol handlers: records frames and acks. */
export function recordingConn(limits = { max_frame: 8192, max_content: 4000 }) {
  return {
    open: true, limits, sent: [], acks: [],
    send(f) { this.sent.push(f); },
    ack(id, status) { this.acks.push([id, status]); },
  };
}
