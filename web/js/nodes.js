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

export class NodeList {
  /**
   * @param {object} o
   * @param {() => Promise<Array<{node: string, url: string}>|null>} o.fetchNodes
   *        the list, or null when the server is not in a cluster (404)
   * @param {string} o.origin  the page's origin (`scheme://host:port`)
   * @param {(node: {node: string, url: string}|null) => void} [o.onMove]
   *        the node in use changed (null: the page's origin)
   * @param {() => void} [o.onList]  a list was fetched (or a 404 said there is none)
   */
  constructor({ fetchNodes, origin, onMove = () => {}, onList = () => {} }) {
    this.fetchNodes = fetchNodes;
    this.origin = trimUrl(origin);
    this.onMove = onMove;
    this.onList = onList;
    this.nodes = [];
    this.current = null; // a {node, url} of `nodes`, or null: the page's origin
    this.inflight = null;
  }

  get cluster() { return this.nodes.length > 0; }

  /** The base URL of the node in use (the page's origin when none is chosen). */
  base() { return this.current ? this.current.url : this.origin; }

  /** The name of the node in use, when known (null on a single node). */
  name() {
    if (this.current) return this.current.node;
    const own = this.nodes.find((n) => n.url === this.origin);
    return own ? own.node : null;
  }

  /** Fetches the list; a failure keeps the one we have (the node may be the one that died). */
  refresh() {
    if (this.inflight) return this.inflight;
    const run = async () => {
      let list;
      try { list = await this.fetchNodes(); } catch { return false; }
      if (list === null) { this.set([]); this.onList(); return true; }
      // An empty list (the node sees no serving node right now) says nothing
      // about where to go: the one we have is kept.
      if (!Array.isArray(list) || !list.length) return false;
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
}

function trimUrl(u) {
  return String(u).replace(/\/+$/, '');
}
