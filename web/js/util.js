// Small DOM-free helpers shared by the modules (node imports them in tests).

export const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;
export const USER_RE = /^[a-z0-9_]{3,32}$/;
export const CLIENT_RE = /^[A-Za-z0-9_-]{1,64}$/;

const encoder = new TextEncoder();

/** UTF-8 length in bytes: what the server's `max_frame` counts. */
export function utf8Bytes(s) {
  return encoder.encode(s).length;
}

export function uuid() {
  const c = globalThis.crypto;
  if (c.randomUUID) return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function storeGet(storage, key, fallback) {
  try { const v = JSON.parse(storage.getItem(key)); return v ?? fallback; } catch { return fallback; }
}

export function storeSet(storage, key, v) {
  try { storage.setItem(key, JSON.stringify(v)); } catch { /* quota or disabled */ }
}

/** The real timers, or a fake clock in tests: one seam for every module. */
export const realTimers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (t) => clearInterval(t),
};
