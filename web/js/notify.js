// Desktop notifications (the Notification API): off until the user turns
// them on with a click (the permission prompt is asked for only then, inside
// that gesture), muted per room, shown only while the tab is hidden for a
// private message to me or a message that mentions me. No DOM here: `env`
// is { Notification, storage, hidden(), focus() } (the window's in the
// browser, fakes in the unit tests).

import { mentionsUser } from './format.js';

export const ENABLED_KEY = 'hubbub.notify';
export const MUTED_KEY = 'hubbub.muted';
const MAX_BODY = 200;

/** Why `m` deserves a notification for `me` ('private', 'mention') or null. */
export function notifyReason(m, me) {
  if (!m || !me || m.sender === me) return null;
  if (m.type === 'private' && (m.target === undefined || m.target === me)) return 'private';
  if (mentionsUser(m, me)) return 'mention';
  return null;
}

export class Notifier {
  constructor(env) {
    this.env = env;
    this.sent = 0;
  }

  get supported() { return typeof this.env.Notification === 'function'; }

  get permission() { return this.supported ? this.env.Notification.permission : 'unsupported'; }

  /** On, and allowed by the browser. */
  get enabled() {
    return this.permission === 'granted' && this.env.storage.getItem(ENABLED_KEY) === 'on';
  }

  /**
   * The toggle's click: turning on asks for the permission (only ever from
   * here, a user gesture). Resolves to the new state: 'on', 'off',
   * 'denied' or 'unsupported'.
   */
  async toggle() {
    if (!this.supported) return 'unsupported';
    if (this.enabled) {
      this.env.storage.setItem(ENABLED_KEY, 'off');
      return 'off';
    }
    // Asked even when already granted: it answers at once then, without a
    // prompt, and this stays the one place (a click) that ever asks.
    let p;
    try { p = await this.env.Notification.requestPermission(); } catch { p = 'denied'; }
    if (p !== 'granted') {
      this.env.storage.setItem(ENABLED_KEY, 'off');
      return 'denied';
    }
    this.env.storage.setItem(ENABLED_KEY, 'on');
    return 'on';
  }

  mutedRooms() {
    try {
      const v = JSON.parse(this.env.storage.getItem(MUTED_KEY));
      return Array.isArray(v) ? v.filter((r) => typeof r === 'string') : [];
    } catch { return []; }
  }

  isMuted(room) { return this.mutedRooms().includes(room); }

  setMuted(room, muted) {
    const rest = this.mutedRooms().filter((r) => r !== room);
    this.env.storage.setItem(MUTED_KEY, JSON.stringify(muted ? [...rest, room] : rest));
  }

  /**
   * A new live message from the server in `room`: shown as a notification
   * when on, the tab hidden, the room not muted and the message for me.
   * Returns the notification (or null).
   */
  consider(m, { me, room }) {
    if (!this.enabled || !this.env.hidden() || this.isMuted(room)) return null;
    const why = notifyReason(m, me);
    if (!why) return null;
    const title = why === 'private' ? `Private message from ${m.sender}` : `${m.sender} mentioned you in #${room}`;
    const body = String(m.content ?? '').slice(0, MAX_BODY);
    let n;
    try {
      // `tag`: the same message (a resend, a second frame) replaces, not repeats.
      n = new this.env.Notification(title, { body, tag: `hubbub-${m.id}` });
    } catch {
      return null; // some browsers allow notifications only from a service worker
    }
    this.sent += 1;
    n.onclick = () => { this.env.focus(); n.close(); };
    return n;
  }
}
