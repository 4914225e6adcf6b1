// The room list in the sidebar (one button per room: "#general, 3 unread,
// 1 mention", a badge, a mention marker), the polite summary of rising
// counts in other rooms, and which message of the shown room is the newest
// one on screen (for the read position). DOM only; the counts are rooms.js's.

import { $, el, announce } from './render.js';
import { badgeText, roomLabel, keepPlaces } from './rooms.js';

const ANNOUNCE_AFTER_MS = 2500; // rises in other rooms are said together, at most this often

export function createRoomList({ onPick }) {
  const buttons = new Map(); // room -> {li, b, badge, at}
  let names = [];            // the order drawn
  let last = null;           // the last render's arguments: a held reorder is drawn from them
  const risen = new Map(); // room -> counts, not yet announced
  let announceTimer = null;

  // The user is in the list: keyboard focus on one of its buttons, or the
  // pointer over it. Then nothing moves under them (keepPlaces); the order
  // by activity is drawn once they leave.
  const ul = $('room-list');
  const held = () => ul.matches(':hover') || ul.contains(document.activeElement);
  const flush = () => { if (last && !held()) render(...last); };
  ul.addEventListener('pointerleave', flush);
  ul.addEventListener('focusout', () => setTimeout(flush, 0)); // once the focus has landed

  // Items are created once per room and moved, never rebuilt, so the focus
  // stays on its button; the counts are painted in place.
  function render(list, rooms, current) {
    last = [list, rooms, current];
    const want = held() ? keepPlaces(names, list) : list;
    if (want.join('\n') !== names.join('\n')) place(want);
    for (const [r, v] of buttons) paint(r, v, rooms.get(r), r === current);
  }

  function place(want) {
    const a = document.activeElement;
    const focused = a && ul.contains(a) ? a : null;
    const keep = new Set(want);
    for (const [r, v] of buttons) if (!keep.has(r)) { v.li.remove(); buttons.delete(r); }
    want.forEach((r, i) => {
      const li = buttons.has(r) ? buttons.get(r).li : item(r);
      if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
    });
    names = want.slice();
    if (focused && focused.isConnected && document.activeElement !== focused) focused.focus();
  }

  function item(r) {
    const li = el('li');
    const b = el('button', 'room-btn');
    b.type = 'button';
    b.dataset.room = r;
    const name = el('span', 'room-name', `#${r}`);
    const at = el('span', 'room-mention', '@');
    const badge = el('span', 'room-badge');
    at.setAttribute('aria-hidden', 'true');
    badge.setAttribute('aria-hidden', 'true'); // the button's name says it in words
    // The space keeps the visible text's words apart ("#general 3", not
    // "#general3"), so it stays part of the button's name (axe's
    // label-content-name-mismatch).
    b.append(name, ' ', at, badge);
    b.addEventListener('click', () => onPick(r));
    li.append(b);
    buttons.set(r, { li, b, badge, at });
    return li;
  }

  function paint(r, v, R, current) {
    const counts = R ? R.counts : { unread: 0, mentions: 0 };
    const label = roomLabel(r, counts);
    if (v.b.getAttribute('aria-label') !== label) v.b.setAttribute('aria-label', label);
    if (current) v.b.setAttribute('aria-current', 'true');
    else v.b.removeAttribute('aria-current');
    const text = badgeText(counts.unread);
    if (v.badge.textContent !== text) v.badge.textContent = text;
    v.badge.hidden = !text;
    v.at.hidden = !counts.mentions;
    v.b.classList.toggle('has-unread', !!counts.unread);
    v.b.classList.toggle('has-mention', !!counts.mentions);
    v.b.dataset.unread = String(counts.unread || 0);
    v.b.dataset.mentions = String(counts.mentions || 0);
  }

  // A count in a room that is not shown went up: said once for a burst
  // (screen readers are not told of every message in every room).
  function rose(room, counts) {
    risen.set(room, { ...counts });
    if (announceTimer) return;
    announceTimer = setTimeout(() => {
      announceTimer = null;
      const parts = [...risen].slice(0, 3).map(([r, c]) => roomLabel(r, c));
      if (risen.size > 3) parts.push(`and ${risen.size - 3} more rooms`);
      risen.clear();
      if (parts.length) announce(`New messages in ${parts.join('; ')}`);
    }, ANNOUNCE_AFTER_MS);
  }

  function clear() {
    clearTimeout(announceTimer);
    announceTimer = null;
    risen.clear();
    names = [];
    last = null;
    buttons.clear();
    ul.replaceChildren();
  }

  return { render, rose, clear };
}

/**
 * The cursor of the newest message of the shown room that is on screen (at
 * least half of it, or a good part of the view), or null: the tab hidden,
 * or none.
 */
export function newestVisibleCursor() {
  if (document.visibilityState !== 'visible') return null;
  const view = $('scroller').getBoundingClientRect();
  const items = $('messages').children;
  for (let i = items.length - 1; i >= 0; i -= 1) {
    const li = items[i];
    if (!li.dataset.cursor) continue;
    const r = li.getBoundingClientRect();
    if (r.top >= view.bottom) continue; // below the view
    if (r.bottom <= view.top) return null; // above it: nothing newer is on screen
    const seen = Math.min(r.bottom, view.bottom) - Math.max(r.top, view.top);
    if (seen >= Math.min(r.height / 2, 120)) return li.dataset.cursor;
  }
  return null;
}
