// The cluster's nodes as this tab knows them, and the one it uses now.
//
// `GET /api/cluster/nodes` lists the live, serving nodes ({node, url}); a
// single hubbub answers 404, and then there is no list: everything goes to
// the page's own origin, exactly as before clusters existed. The list is
// kept across rooms (one NodeList per tab) and refreshed by the connection
// (on each welcome and every 30 s while online).
//
// The order of the list: the page's own node first when it is in it, then
// the others by name, so every tab walks the same ring from its own node.
// `advance()` moves to the next node of the ring: the connection calls it
// when a socket is closed with 1001 (the node is going away or lost its
// majority) or fails to open (network error, 503). The API follows the
// socket's node (`base()`): while the page's node serves, that is the page's
// origin; once it is gone, history, refresh and /api/me must still work, so
// they go where the socket went (the server allows its peers' origins, with
// credentials).
//
// Users have a home node (a consistent-hash ring on the servers), and a node
// that is not the caller's home answers the upgrade with a 307 a browser
// does not follow (the socket just fails). So before each socket the
// connection asks `route()`: `GET /api/cluster/route` at the node in use
// names the home node's socket URL, and that node becomes the one in use
// (the API follows it). A node that cannot be reached moves the question to
// the next node of the ring (each node asked at most once per attempt); any
// other failure (401, 503, a strange answer) leaves today's choice alone.
// A 404 (from the route or the list) means a single node: the route is not
// asked again until a list says otherwise, and everything stays at the
// page's origin.

export class NodeList {
  /**
   * @param {object} o
   * @param {() => Promise<Array<{node: string, url: string}>|null>} o.fetchNodes
   *        the list, or null when the server is not in a cluster (404)
   * @param {string} o.origin  the page's origin (`scheme://host:port`)
   * @param {(node: {node: string, url: string}|null) => void} [o.onMove]
   *        the node in use changed (null: the page's origin)
   * @param {() => void} [o.onList]  a list was fetched (or a 404 said there is none)
   * @param {() => Promise<{url: string, node: string}|null>} [o.fetchRoute]
   *        the caller's home node, asked at `base()`, or null when the server is
   *        not in a cluster (404); rejects with `status` 0 when the node cannot
   *        be reached (absent: no routing, the ring alone decides)
   */
  constructor({ fetchNodes, origin, onMove = () => {}, onList = () => {}, fetchRoute = null }) {
    this.fetchNodes = fetchNodes;
    this.fetchRoute = fetchRoute;
    this.single = false; // a 404 said so: no route to ask
    this.origin = trimUrl(origin);
    this.onMove = onMove;
    this.onList = onList;
    this.nodes = [];
    this.current = null; // a {node, url} of `nodes`, or null: the page's origin
    this.originName = null; // the page's node's name, as a route answer gave it
    this.inflight = null;
  }

  get cluster() { return this.nodes.length > 0; }

  /** The base URL of the node in use (the page's origin when none is chosen). */
  base() { return this.current ? this.current.url : this.origin; }

  /** The name of the node in use, when known (null on a single node). */
  name() {
    if (this.current) return this.current.node;
    const own = this.nodes.find((n) => n.url === this.origin);
    return own ? own.node : this.originName;
  }

  /** Fetches the list; a failure keeps the one we have (the node may be the one that died). */
  refresh() {
    if (this.inflight) return this.inflight;
    const run = async () => {
      let list;
      try { list = await this.fetchNodes(); } catch { return false; }
      if (list === null) { this.single = true; this.set([]); this.onList(); return true; }
      // An empty list (the node sees no serving node right now) says nothing
      // about where to go: the one we have is kept.
      if (!Array.isArray(list) || !list.length) return false;
      this.single = false;
      this.set(list.filter((n) => n && typeof n.node === 'string' && typeof n.url === 'string')
        .map((n) => ({ node: n.node, url: trimUrl(n.url) })));
      this.onList();
      return true;
    };
    this.inflight = run().finally(() => { this.inflight = null; });
    return this.inflight;
  }

  set(list) {
    const own = list.filter((n) => n.url === this.origin);
    const others = list.filter((n) => n.url !== this.origin)
      .sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
    this.nodes = [...own, ...others];
    if (!list.length) this.originName = null;
    if (!this.nodes.length && this.current) {
      // Back to a single node: the page's origin, as before.
      this.current = null;
      this.onMove(null);
    }
    // Otherwise the node in use stays, listed or not: only a failure moves us.
  }

  /**
   * The node in use failed: move to the next one of the ring. Returns false
   * when there is nowhere else to go (no list, or only the node in use).
   */
  advance() {
    if (!this.nodes.length) return false;
    const at = this.base();
    const i = this.nodes.findIndex((n) => n.url === at);
    const next = this.nodes[(i + 1) % this.nodes.length]; // i = -1 (not listed): the first
    if (next.url === at) return false;
    this.current = next.url === this.origin ? null : next;
    this.onMove(this.current);
    return true;
  }

  /** Whether `route()` has anything to ask (a cluster, or not known yet). */
  get routed() { return !!this.fetchRoute && !this.single; }

  /**
   * Where the caller's socket should go: the home node's socket URL (that
   * node is then the one in use), or null when the route says nothing (a
   * single node, or no node answered it): then the node in use, as before.
   */
  async route() {
    if (!this.routed) return null;
    const tries = Math.max(1, this.nodes.length);
    for (let i = 0; i < tries; i += 1) {
      let r;
      try {
        r = await this.fetchRoute();
      } catch (e) {
        // Unreachable: that node is probably dead, ask the next one. Anything
        // else (401 before a refresh, 503 with no serving node known) is for
        // the socket attempt to find out, where it is handled today.
        // The last node asked is kept: the socket tries it, as before routing.
        if (e && e.status === 0 && i + 1 < tries && this.advance()) continue;
        return null;
      }
      if (r === null) {
        this.single = true;
        this.set([]);
        return null;
      }
      const home = homeOf(r);
      if (!home) return null;
      this.go(home);
      return home.ws;
    }
    return null;
  }

  /** Makes `n` ({node, url}) the node in use (`current` stays null for the page's origin). */
  go(n) {
    if (n.url === this.origin) {
      this.originName = n.node; // the list may not be here yet to name it
      if (!this.current) return;
      this.current = null;
    } else {
      if (this.current && this.current.url === n.url && this.current.node === n.node) return;
      this.current = { node: n.node, url: n.url };
    }
    this.onMove(this.current);
  }
}

// A route answer's socket URL (ws: or wss:) and the node's base URL (http:
// or https:, the same host), or null when it is not one.
function homeOf(r) {
  if (!r || typeof r.node !== 'string' || typeof r.url !== 'string') return null;
  let u;
  try { u = new URL(r.url); } catch { return null; }
  const http = { 'ws:': 'http:', 'wss:': 'https:' }[u.protocol];
  if (!http) return null;
  return { node: r.node, url: `${http}//${u.host}`, ws: u.href };
}

function trimUrl(u) {
  return String(u).replace(/\/+$/, '');
}
