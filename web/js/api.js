// HTTP side of the client: accounts, /api/me and token refresh.
// Cookies are HttpOnly, so the only way to know who we are is GET /api/me,
// and `access_expires_at` in the bodies says when to refresh.
// In a cluster the calls follow the socket's node (`setBase`): the page's own
// origin while that node serves, another node once it is gone (cookies are
// sent along; the server allows its peers' origins with credentials).

const REFRESHED_AT = 'hubbub.refreshedAt';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

/** Server clock minus ours, from the last response's `Date` (0 when unknown). */
export let clockSkewMs = 0;

function noteDate(res) {
  const d = Date.parse(res.headers.get('date') || '');
  if (Number.isNaN(d)) return;
  // `Date` has whole seconds: only a skew well beyond that is believed.
  const skew = d - Date.now();
  clockSkewMs = Math.abs(skew) > 2000 ? skew : 0;
}

let base = '';

/** Where API calls go: '' (the page's origin) or another node's base URL. */
export function setBase(url) {
  base = url && url.replace(/\/+$/, '') !== location.origin ? url.replace(/\/+$/, '') : '';
}

// `timeoutMs`: give up (like an unreachable server) after that long.
async function call(method, path, body, timeoutMs = 0) {
  let res;
  try {
    res = await fetch(base + path, {
      method,
      credentials: base ? 'include' : 'same-origin',
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      signal: timeoutMs ? AbortSignal.timeout(timeoutMs) : undefined,
    });
  } catch (e) {
    throw new ApiError(0, 'network', 'The server cannot be reached.');
  }
  noteDate(res);
  let data = null;
  if (res.status !== 204) {
    try { data = await res.json(); } catch { data = null; }
  }
  if (res.status === 401 && base && path === '/api/auth/refresh') {
    // A refresh refused by another node may only mean that its host never
    // got our cookies (cookies are per host; nodes on one machine share
    // them). It is not a sign-out: reported like an unreachable server, so
    // the socket moves on round the ring and only the page's own node can
    // end the session. (Its /api/me 401 stays a 401: it leads to a refresh.)
    throw new ApiError(0, 'network', 'Not signed in at this server.');
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : {};
    throw new ApiError(res.status, err.code, err.message);
  }
  return data;
}

export const signup = (username, password) => call('POST', '/api/auth/signup', { username, password });
export const login = (username, password) => call('POST', '/api/auth/login', { username, password });
export const logout = () => call('POST', '/api/auth/logout');
export const me = () => call('GET', '/api/me');

/**
 * The user's rooms with their counts ([{room, last_cursor, read_cursor,
 * unread, mentions}], newest activity first), or null when this server has
 * no room list (404: an older server; the page falls back to the rooms it knows).
 */
export async function rooms() {
  try {
    const r = await call('GET', '/api/rooms');
    return r && Array.isArray(r.rooms) ? r.rooms : [];
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

/** The cluster's serving nodes ([{node, url}]), or null on a single node (404). */
export async function clusterNodes() {
  try {
    const r = await call('GET', '/api/cluster/nodes');
    return r && Array.isArray(r.nodes) ? r.nodes : [];
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

// The socket waits for the route's answer: a node that takes this long is
// treated as unreachable (the next node of the ring is asked).
const ROUTE_TIMEOUT_MS = 5000;

/**
 * The caller's home node ({url, node}: its socket URL and name), asked at
 * the node in use; null on a single node (404). Rejects with an ApiError,
 * `status` 0 when the node cannot be reached, 503 when it knows no serving node.
 */
export async function clusterRoute() {
  try {
    return await call('GET', '/api/cluster/route', undefined, ROUTE_TIMEOUT_MS);
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

let inflight = null;

// Refresh tokens are single-use and reusing a spent one revokes the whole
// family, so refreshes are serialised across this origin's tabs (Web Locks).
// When another tab refreshed a moment ago (cookies are shared), /api/me tells
// whether its token already outlives `knownExpiresMs` (the expiry this tab
// is refreshing ahead of); only if not is the refresh token spent.
// Resolves to the body, with `access_expires_at`.
export function refresh(knownExpiresMs = 0) {
  if (inflight) return inflight;
  const run = async () => {
    const recent = Number(localStorage.getItem(REFRESHED_AT) || 0);
    if (Date.now() - recent < 60_000) {
      try {
        const r = await me();
        if (Date.parse(r.access_expires_at) > knownExpiresMs) return r;
      } catch (e) { if (e.status !== 401) throw e; }
    }
    const r = await call('POST', '/api/auth/refresh');
    localStorage.setItem(REFRESHED_AT, String(Date.now()));
    return r;
  };
  const locked = navigator.locks && navigator.locks.request
    ? navigator.locks.request('hubbub-refresh', run)
    : run();
  inflight = locked.finally(() => { inflight = null; });
  return inflight;
}

// Who am I: /api/me, refreshing once on 401. Returns the body
// ({user, access_expires_at}) or null.
export async function whoami() {
  try {
    return await me();
  } catch (e) {
    if (e.status !== 401) throw e;
  }
  try {
    await refresh();
    return await me();
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
}
