// Client state: who I am, my rooms, who is online, and per room the messages I hold.
// Messages are kept by id (so every copy of a message, live or fetched, is one entry) and shown
// in (sent_at, id) order; my own unconfirmed messages are kept by client_msg_id as "pending".

const PENDING_KEY = 'chat.pending.v1';

export function sentMs(msg) {
  const ms = Date.parse(msg.sent_at);
  return Number.isFinite(ms) ? ms : 0;
}

export function compareMessages(a, b) {
  return a._ms - b._ms || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** Length as the server counts it: Unicode code points, not UTF-16 units. */
export function codePoints(text) {
  let n = 0;
  for (const _ of text) n += 1; // eslint-disable-line no-unused-vars
  return n;
}

export class RoomState {
  constructor() {
    this.msgs = new Map(); // id -> message
    this._sorted = null;
    this.loaded = false; // false | 'loading' | true: the newest page of history was fetched
    this.hasOlder = true; // history holds older messages than the oldest we have
    this.loadingOlder = false;
    this.cursor = null; // resume point: newest id known to be gap-free (see sync.js)
    this.unread = 0;
    this.typing = new Map(); // username -> expiry (ms)
    this.lastMs = 0;
  }

  sorted() {
    if (!this._sorted) this._sorted = [...this.msgs.values()].sort(compareMessages);
    return this._sorted;
  }

  oldest() { return this.sorted()[0] || null; }
  newest() { const s = this.sorted(); return s[s.length - 1] || null; }
}

export class Store {
  constructor() { this.reset(); }

  reset() {
    this.me = null; // {id, username}
    this.rooms = new Map(); // id -> room object from the API
    this.order = []; // room ids, most recently active first
    this.online = new Set(); // usernames
    this.activeRoomId = null;
    this.state = new Map(); // room id -> RoomState
    this.pending = new Map(); // client_msg_id -> {cmid, room, body, createdMs, state, ...}
  }

  isMe(username) {
    return Boolean(this.me && username && username.toLowerCase() === this.me.username.toLowerCase());
  }

  rs(roomId) {
    let s = this.state.get(roomId);
    if (!s) {
      s = new RoomState();
      this.state.set(roomId, s);
    }
    return s;
  }

  // ---- rooms
  setRooms(list) {
    const keep = new Set(list.map((r) => r.id));
    for (const id of [...this.rooms.keys()]) if (!keep.has(id)) this.removeRoom(id);
    for (const r of list) this.rooms.set(r.id, r);
    this.order = list.map((r) => r.id);
  }

  upsertRoom(room, toFront = false) {
    const known = this.rooms.has(room.id);
    this.rooms.set(room.id, room);
    if (!known || toFront) this.touch(room.id);
  }

  removeRoom(id) {
    this.rooms.delete(id);
    this.state.delete(id);
    this.order = this.order.filter((x) => x !== id);
    for (const [cmid, p] of this.pending) if (p.room === id) this.pending.delete(cmid);
    if (this.activeRoomId === id) this.activeRoomId = null;
    this.savePending();
  }

  touch(id) {
    this.order = [id, ...this.order.filter((x) => x !== id)];
  }

  orderedRooms() {
    return this.order.map((id) => this.rooms.get(id)).filter(Boolean);
  }

  peerOf(room) {
    if (!room || room.kind !== 'direct') return null;
    const members = room.members || [];
    return members.find((m) => !this.isMe(m)) || members[0] || null;
  }

  roomName(room) {
    if (!room) return '';
    if (room.kind === 'direct') return this.peerOf(room) || 'Direct chat';
    return room.name || 'Group';
  }

  isMember(room) {
    return (room.members || []).some((m) => this.isMe(m));
  }

  // ---- messages
  /** Merge messages (live or fetched) by id. Returns the ones that were new to us. */
  merge(roomId, messages) {
    const s = this.rs(roomId);
    const added = [];
    for (const raw of messages) {
      if (!raw || typeof raw.id !== 'string') continue;
      if (this.isMe(raw.sender) && raw.client_msg_id && this.pending.has(raw.client_msg_id)) {
        this.pending.delete(raw.client_msg_id); // confirmed (by ack, a fetch or another tab)
        this.savePending();
      }
      if (s.msgs.has(raw.id)) continue;
      const msg = { ...raw, _ms: sentMs(raw) };
      s.msgs.set(msg.id, msg);
      s._sorted = null;
      if (msg._ms > s.lastMs) s.lastMs = msg._ms;
      added.push(msg);
    }
    return added;
  }

  /** Drop what we hold for rooms never opened (after a break their live tail may have gaps). */
  dropUnloaded() {
    for (const s of this.state.values()) {
      if (s.loaded !== true && s.loaded !== 'loading') {
        s.msgs.clear();
        s._sorted = null;
      }
    }
  }

  // ---- pending own messages
  addPending(roomId, body) {
    const p = {
      cmid: crypto.randomUUID(),
      room: roomId,
      body,
      createdMs: Date.now(),
      state: 'sending', // sending | failed
      transmitted: false, // sent at least once (a resend then carries retry: true)
      code: null,
      error: null,
    };
    this.pending.set(p.cmid, p);
    this.savePending();
    return p;
  }

  ack(cmid, message) {
    const p = this.pending.get(cmid);
    const roomId = (message && message.room) || (p && p.room);
    this.pending.delete(cmid);
    this.savePending();
    return roomId && message ? this.merge(roomId, [message]) : [];
  }

  fail(cmid, code, text) {
    const p = this.pending.get(cmid);
    if (!p) return null;
    p.state = 'failed';
    p.code = code;
    p.error = text;
    this.savePending();
    return p;
  }

  pendingFor(roomId) {
    return [...this.pending.values()]
      .filter((p) => p.room === roomId)
      .sort((a, b) => a.createdMs - b.createdMs);
  }

  /** Pending messages survive a reload of the tab (they are resent after `ready`). */
  savePending() {
    try {
      const list = [...this.pending.values()].filter((p) => p.state === 'sending');
      sessionStorage.setItem(PENDING_KEY, JSON.stringify(list));
    } catch { /* storage full or disabled */ }
  }

  loadPending() {
    try {
      for (const p of JSON.parse(sessionStorage.getItem(PENDING_KEY) || '[]')) {
        if (p && p.cmid && p.room && typeof p.body === 'string') {
          this.pending.set(p.cmid, { ...p, transmitted: true });
        }
      }
    } catch { /* ignore */ }
  }

  clearSaved() {
    sessionStorage.removeItem(PENDING_KEY);
  }

  totalUnread() {
    let n = 0;
    for (const id of this.order) n += this.state.get(id)?.unread || 0;
    return n;
  }
}
