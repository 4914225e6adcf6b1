// When to refresh the access token: from `access_expires_at` (sign-up,
// log-in, refresh and /api/me bodies), a margin before it, never from
// guesses. After each refresh the socket is renewed on purpose (it carries
// the old token, which the server would close with 1008 at its expiry); a
// 1008 that still happens (revocation, a throttled background tab) refreshes
// and reconnects with `since`, and does not change the schedule.

import { realTimers } from './util.js';

export const MIN_REFRESH_MS = 1000;
export const MAX_MARGIN_MS = 60_000;

/**
 * Milliseconds from `nowMs` until the refresh: a quarter of the remaining
 * lifetime before the expiry, between 1 s and 60 s (a 15-minute token is
 * refreshed after 14 minutes), never sooner than 1 s. `skewMs` is the
 * server's clock minus ours.
 */
export function refreshDelay(expiresAtIso, nowMs, skewMs = 0) {
  const exp = Date.parse(expiresAtIso);
  if (Number.isNaN(exp)) return null;
  const remaining = exp - (nowMs + skewMs);
  const margin = Math.min(MAX_MARGIN_MS, Math.max(MIN_REFRESH_MS, remaining / 4));
  return Math.max(MIN_REFRESH_MS, remaining - margin);
}

/**
 * @param {object} o
 * @param {{refresh: (knownExpiresMs: number) => Promise<object>, me: () => Promise<object>, clockSkew?: () => number}} o.api
 * @param {() => void} o.onRenew        the token was refreshed on schedule: renew the socket
 * @param {(msg: string) => void} o.onSignedOut
 * @param {object} [o.timers]
 */
export function createAuth({ api, onRenew, onSignedOut, timers = realTimers }) {
  let timer = null;
  let expiresMs = 0;
  let active = false;
  const stats = { refreshes: 0 };

  function schedule(body) {
    timers.clearTimeout(timer);
    timer = null;
    if (!active || !body || !body.access_expires_at) return;
    expiresMs = Date.parse(body.access_expires_at) || 0;
    const delay = refreshDelay(body.access_expires_at, timers.now(), api.clockSkew ? api.clockSkew() : 0);
    if (delay === null) return;
    timer = timers.setTimeout(planned, delay);
  }

  async function planned() {
    timer = null;
    if (!active) return;
    try {
      const body = await api.refresh(expiresMs);
      if (!active) return;
      stats.refreshes += 1;
      schedule(body);
      onRenew();
    } catch (e) {
      if (!active) return;
      if (e.status === 401) { onSignedOut('Your session ended. Please log in again.'); return; }
      // Server unreachable: try again soon; the socket's own retries go on.
      timer = timers.setTimeout(planned, 5000);
    }
  }

  // For the connection: after a 1008 (`force`) or a refused upgrade.
  async function refreshAuth(force) {
    try {
      let body;
      if (!force) {
        try { body = await api.me(); } catch (e) { if (e.status !== 401) return 'error'; }
      }
      if (!body) {
        body = await api.refresh(expiresMs);
        stats.refreshes += 1;
      }
      schedule(body);
      return 'ok';
    } catch (e) {
      return e.status === 401 ? 'unauthorized' : 'error';
    }
  }

  return {
    /** Signed in (or a body with a new expiry): (re)start the schedule. */
    start(body) { active = true; schedule(body); },
    stop() { active = false; timers.clearTimeout(timer); timer = null; },
    refreshAuth,
    stats,
    get expiresMs() { return expiresMs; },
  };
}
