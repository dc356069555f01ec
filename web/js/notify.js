// Desktop notifications and a short sound, for messages the user is not looking at.
//
//  * Permission is asked for only from a click (`enable()`), never on load. The user's choice
//    to turn them off is kept in localStorage (`chat.notify.v1`, not a secret).
//  * One tab of the browser notifies, not every tab: the tab holding the Web Lock
//    `chat-notify` (the others wait in line; a closed tab hands it on). Tabs tell each other
//    which room they show while visible (BroadcastChannel `chat-views-v1`), so a message in a
//    room that any visible tab shows raises nothing. Without Web Locks every tab notifies;
//    the notification's tag (the message id) keeps it one on the screen.

import { notificationText, shouldNotify } from './readstate.js';

const PREF_KEY = 'chat.notify.v1';
const LOCK = 'chat-notify';
const CHANNEL = 'chat-views-v1';
const VIEW_EVERY_MS = 60_000; // a tab repeats what it shows ...
const VIEW_TTL_MS = 150_000; // ... and a tab not heard of for this long (it crashed) is forgotten

export class Notifier {
  /**
   * @param {object} o
   * @param {() => object} o.view           {room, visible}: what this tab shows
   * @param {(roomId: string) => void} o.onOpen  a notification was clicked
   * @param {() => void} o.onChange        the state for the button changed
   */
  constructor({ view, onOpen, onChange }) {
    this.view = view;
    this.onOpen = onOpen;
    this.onChange = onChange;
    this.tabId = (crypto.randomUUID && crypto.randomUUID()) || String(Math.random()).slice(2);
    this.leader = false;
    this.active = false; // signed in: competing for the lock
    this._release = null;
    this.views = new Map(); // other tab id -> {room, visible, at}
    this._heartbeat = null;
    this.shown = 0; // notifications raised by this tab (for tests and support)
    this.audio = null;
    const locks = navigator.locks;
    this.locks = locks && typeof locks.request === 'function' ? locks : null;
    this.channel = 'BroadcastChannel' in window ? new BroadcastChannel(CHANNEL) : null;
    if (this.channel) this.channel.onmessage = (ev) => this._onPeer(ev.data);
    window.addEventListener('pagehide', () => this._post({ type: 'view', tab: this.tabId, room: null, visible: false }));
    // the sound may only start after a user gesture: make the audio context on the first one
    const unlock = () => {
      this._audio();
      window.removeEventListener('pointerdown', unlock, true);
      window.removeEventListener('keydown', unlock, true);
    };
    window.addEventListener('pointerdown', unlock, true);
    window.addEventListener('keydown', unlock, true);
  }

  get supported() { return typeof window.Notification === 'function'; }

  get permission() { return this.supported ? window.Notification.permission : 'denied'; }

  /** on | off | blocked | unsupported: what the button shows. */
  get state() {
    if (!this.supported) return 'unsupported';
    if (this.permission === 'denied') return 'blocked';
    return this.permission === 'granted' && this._pref() !== 'off' ? 'on' : 'off';
  }

  get enabled() { return this.state === 'on'; }

  _pref() {
    try { return localStorage.getItem(PREF_KEY); } catch { return null; }
  }

  _setPref(v) {
    try { localStorage.setItem(PREF_KEY, v); } catch { /* ignore */ }
  }

  /** The button was clicked: ask for permission (a user gesture) or switch them off/on. */
  async toggle() {
    if (!this.supported) return this.state;
    if (this.enabled) {
      this._setPref('off');
    } else {
      this._setPref('on');
      if (this.permission === 'default') {
        try { await window.Notification.requestPermission(); } catch { /* old callback form */ }
      }
    }
    this.onChange?.();
    return this.state;
  }

  /** Signed in: take part in the election of the tab that notifies. */
  start() {
    if (this.active) return;
    this.active = true;
    this.views.clear();
    this.viewChanged();
    this._heartbeat = setInterval(() => this.viewChanged(), VIEW_EVERY_MS);
    this._post({ type: 'hello', tab: this.tabId });
    if (!this.locks) {
      this.leader = true;
      return;
    }
    this.locks.request(LOCK, () => new Promise((release) => {
      if (!this.active) {
        release();
        return;
      }
      this.leader = true;
      this._release = release;
    })).catch(() => { /* the page is going away */ });
  }

  stop() {
    this.active = false;
    this.leader = false;
    clearInterval(this._heartbeat);
    this._heartbeat = null;
    if (this._release) this._release();
    this._release = null;
    this._post({ type: 'view', tab: this.tabId, room: null, visible: false });
  }

  /** This tab's room or visibility changed: tell the other tabs. */
  viewChanged() {
    const v = this.view();
    this._post({ type: 'view', tab: this.tabId, room: v.room || null, visible: Boolean(v.visible) });
  }

  /** The rooms a visible tab of this browser shows (this one included). */
  lookingAt() {
    const rooms = new Set();
    const mine = this.view();
    if (mine.visible && mine.room) rooms.add(mine.room);
    const now = Date.now();
    for (const [tab, v] of this.views) {
      if (now - v.at > VIEW_TTL_MS) this.views.delete(tab);
      else if (v.visible && v.room) rooms.add(v.room);
    }
    return rooms;
  }

  /** A live message arrived. Raise a notification if it should (and this tab is the one). */
  consider(msg, { roomName, isDirect, isMe, muted }) {
    if (!this.active || !this.leader) return false;
    if (!shouldNotify(msg, { enabled: this.enabled, isMe, muted, lookingAt: this.lookingAt() })) {
      return false;
    }
    const { title, body } = notificationText(msg, roomName, isDirect);
    try {
      const n = new window.Notification(title, { body, tag: `chat-${msg.id}`, data: { room: msg.room } });
      n.onclick = () => {
        window.focus();
        this.onOpen?.(msg.room);
        n.close();
      };
    } catch {
      return false; // e.g. a platform that only notifies from a service worker
    }
    this.shown += 1;
    this._ding();
    return true;
  }

  _audio() {
    if (this.audio || typeof window.AudioContext !== 'function') return this.audio;
    try { this.audio = new window.AudioContext(); } catch { this.audio = null; }
    return this.audio;
  }

  /** A short, quiet two-tone chime (no sound file to fetch). */
  _ding() {
    const ctx = this.audio;
    if (!ctx || ctx.state !== 'running') return;
    try {
      const t = ctx.currentTime;
      const gain = ctx.createGain();
      gain.gain.setValueAtTime(0.0001, t);
      gain.gain.exponentialRampToValueAtTime(0.08, t + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.35);
      gain.connect(ctx.destination);
      for (const [freq, at] of [[880, 0], [1320, 0.09]]) {
        const osc = ctx.createOscillator();
        osc.frequency.value = freq;
        osc.connect(gain);
        osc.start(t + at);
        osc.stop(t + 0.35);
      }
    } catch { /* no sound, no harm */ }
  }

  _post(msg) {
    try { this.channel?.postMessage(msg); } catch { /* closed */ }
  }

  _onPeer(msg) {
    if (!msg || typeof msg !== 'object' || msg.tab === this.tabId) return;
    if (msg.type === 'view') {
      if (msg.visible || msg.room) this.views.set(msg.tab, { room: msg.room, visible: msg.visible, at: Date.now() });
      else this.views.delete(msg.tab);
    } else if (msg.type === 'hello' && this.active) {
      this.viewChanged(); // a new tab (maybe the next to notify) learns what we show
    }
  }
}
