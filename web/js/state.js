// The client's state, DOM-free. Caps keep a long-lived tab's memory flat:
// the message list (DOM and `msgs`) holds at most `messages` entries (older
// ones are dropped from the top and come back by paging; an older page that
// overflows drops the newest, and "Jump to latest" reloads them), and each
// acked-id set remembers at most `acked` ids (an id forgotten and acked
// again is harmless: the server ignores a receipt that does not move a
// status forward).

export const RANK = { pending: 0, saved: 1, delivered: 2, seen: 3 };

export const CAPS = { messages: 500, acked: 2000 };

export function createState(caps = {}) {
  return {
    caps: { ...CAPS, ...caps },
    me: null,
    clientId: null,
    room: null,
    conn: null,
    msgs: new Map(),        // id -> entry {id, own, status, detail, m}
    order: [],              // ids in display order, oldest first
    lastCursor: null,       // newest cursor seen in this room (for `since`)
    oldestCursor: null,
    moreOlder: false,
    loadingOlder: false,
    olderReq: 0,
    newerTrimmed: false,    // newest messages dropped after paging up: reload to see them
    outbox: new Map(),      // id -> {id, user, room, frame, ...}; until `saved`
    strikes: new Map(),     // outbox id -> sockets that died (1006) with it unanswered
    typers: new Map(),      // sender -> expiry ms
    presence: [],
    pmTarget: null,
    ackedDelivered: new Set(),
    ackedSeen: new Set(),
    visibleUnseen: new Set(),
    unread: 0,              // new messages below the view (the "jump" button)
    hiddenUnread: 0,        // new messages while the tab was hidden (the tab title)
    marker: false,          // the "New messages" marker is shown
    markerAt: null,         // the id of the first message under it
    sys: [],                // system lines {text, kind, after: the id they follow} (protocol.js)
    joinedOnce: false,
    resumed: false,         // the last welcome honoured our `since`
    caughtUp: 0,
    welcomes: 0,
    clientForced: false,
    serverReads: false,     // the server has GET /api/rooms and `read` frames
    titleCount: 0,          // the unread total of all rooms (the tab title)
  };
}

/** Forget the room: used on a room switch and on sign-out. */
export function resetRoom(S) {
  S.msgs.clear();
  S.order = [];
  S.lastCursor = null;
  S.oldestCursor = null;
  S.moreOlder = false;
  S.loadingOlder = false;
  S.newerTrimmed = false;
  S.typers.clear();
  S.presence = [];
  S.visibleUnseen.clear();
  S.unread = 0;
  S.marker = false;
  S.markerAt = null;
  S.sys = [];
  S.joinedOnce = false;
  S.resumed = false;
}

/** Add to an insertion-ordered set, forgetting the oldest beyond `cap`. */
export function rememberId(set, id, cap) {
  set.add(id);
  while (set.size > cap) set.delete(set.values().next().value);
}
