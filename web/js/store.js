// Client state: who I am, my rooms, who is online, and per room the messages I hold.
// Messages are kept by id (so every copy of a message, live or fetched, is one entry) and shown
// in (sent_at, id) order; my own unconfirmed messages are kept by client_msg_id as "pending".
// A room object lists its `members` only up to 100 (API v1.1): a bigger group's members are
// paged (js/members.js) and `member_count` is the only size the client can rely on.

import { applyMemberEvent, hasMemberList } from './members.js';
import { countUnreadAfter, dividerBefore } from './readstate.js';

const PENDING_KEY = 'chat.pending.v1';
const CHANGES_KEY = 'chat.changes.v1';

/** A notice (kind `notice`: "alice added bob") rather than a message someone wrote. */
export function isNotice(msg) {
  return Boolean(msg && msg.kind === 'notice');
}

/**
 * Is `next` a later state of the message `cur` (the same id)? A message only moves forward:
 * edited (a later `edited_at`), then deleted for good. A copy that is not later (an older
 * history page, the original `message` frame after its `message_changed`) changes nothing.
 */
export function isLaterState(cur, next) {
  if (!cur) return true;
  if (cur.deleted) return false;
  if (next.deleted) return true;
  const a = Date.parse(cur.edited_at || '') || 0;
  const b = Date.parse(next.edited_at || '') || 0;
  return b > a;
}

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
    this.hasNewer = false; // a window opened around an older message: newer ones lie after it
    this.loadingNewer = false;
    this.loadGen = 0; // +1 by every load that replaces the window (a late answer is dropped)
    this.tail = new Map(); // id -> live message that came while the window is not the newest
    this.version = 0; // bumped by every change of a held message (edits, deletes)
    this.cursor = null; // resume point: newest id known to be gap-free (see sync.js)
    this.unread = 0; // messages from others after lastRead (the server's count, then kept here)
    this.lastRead = null; // id of the last message read (on any of my devices)
    this.divider = undefined; // the open room's "New messages" line: before this id; null: none
    this.dividerShown = false; // the view was placed at the divider once
    this.typing = new Map(); // username -> expiry (ms)
    this.lastMs = 0;
  }

  sorted() {
    if (!this._sorted) this._sorted = [...this.msgs.values()].sort(compareMessages);
    return this._sorted;
  }

  oldest() { return this.sorted()[0] || null; }
  newest() { const s = this.sorted(); return s[s.length - 1] || null; }

  /** The newest message known of the room: in the window, or live after it. */
  latest() {
    let best = this.newest();
    for (const m of this.tail.values()) if (!best || compareMessages(best, m) < 0) best = m;
    return best;
  }
}

export class Store {
  constructor() { this.reset(); }

  reset() {
    this.me = null; // {id, username}
    this.rooms = new Map(); // id -> room object from the API
    this.order = []; // room ids, most recently active first
    this.online = new Set(); // usernames
    this.presenceKnown = false; // false while my own connection is down: nobody is known online
    this.muted = new Set(); // room ids I muted (no notifications, not in the title's count)
    this.presenceTick = 0; // bumped by every presence change we are told of
    this.presenceAt = new Map(); // username -> presenceTick of the last change told
    this.lostTick = 0; // presenceTick when my connection last broke
    if (this.memberPages) for (const p of this.memberPages.values()) p.dispose();
    this.memberPages = new Map(); // room id -> MemberPages (big groups whose list was shown)
    this.activeRoomId = null;
    this.state = new Map(); // room id -> RoomState
    this.pending = new Map(); // client_msg_id -> {cmid, room, body, createdMs, state, ...}
    this.changes = new Map(); // client_msg_id -> my edit or delete waiting for its ack
    this.previews = new Map(); // room id -> newest message fetched for the sidebar's preview
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
    for (const r of list) {
      this.rooms.set(r.id, r);
      this.applyRoomState(r, true);
      const pages = this.memberPages.get(r.id);
      if (pages && hasMemberList(r)) this.dropMemberPages(r.id);
      else if (pages) pages.setCount(r.member_count);
    }
    this.order = list.map((r) => r.id);
  }

  upsertRoom(room, toFront = false) {
    const known = this.rooms.has(room.id);
    this.rooms.set(room.id, room);
    this.applyRoomState(room, false);
    const pages = this.memberPages.get(room.id);
    if (pages && hasMemberList(room)) this.dropMemberPages(room.id);
    else if (pages) pages.setCount(room.member_count);
    if (!known || toFront) this.touch(room.id);
  }

  /**
   * The caller's state in a room object: `last_read`, `unread` (counted up to 1000 by the
   * server, from stored history) and `muted`. `snapshot` (`ready`, `GET /api/rooms`): the
   * server's word replaces ours. Otherwise (one room fetched while connected, the answer to a
   * create call) the live count we keep is newer than the server's, whose history writer may
   * lag by a batch: the larger count wins and a read position we have stays. Objects without
   * the fields (a `joined` frame) leave what we know as it is.
   */
  applyRoomState(room, snapshot) {
    const s = this.rs(room.id);
    if (room.last_read !== undefined && (snapshot || !s.lastRead)) {
      s.lastRead = typeof room.last_read === 'string' ? room.last_read : null;
    }
    if (typeof room.unread === 'number' && room.unread >= 0) {
      s.unread = snapshot ? room.unread : Math.max(s.unread, room.unread);
      this.recount(room.id); // what we hold may say more (messages after the count was made)
    }
    if (typeof room.muted === 'boolean') this.setMuted(room.id, room.muted);
  }

  setMuted(roomId, muted) {
    if (muted) this.muted.add(roomId);
    else this.muted.delete(roomId);
  }

  isMuted(roomId) { return this.muted.has(roomId); }

  /**
   * Count the unread messages of a room from what we hold, when that can be done exactly:
   * the last read message is held (or nothing was ever read and we hold the whole history).
   * False (the count is left alone) otherwise.
   */
  recount(roomId) {
    const s = this.state.get(roomId);
    if (!s || s.hasNewer) return false; // a window in the past cannot count what follows it
    const whole = s.loaded === true && !s.hasOlder;
    const n = countUnreadAfter(s.sorted(), s.lastRead, (u) => this.isMe(u), whole);
    if (n === null) return false;
    s.unread = n;
    return true;
  }

  /**
   * My read position moved (here or on another device) to `messageId`. Never backwards when
   * both are held; a position we do not hold is taken as it is (the other device had read up
   * to there: what we hold of the room is then treated as read).
   */
  setRead(roomId, messageId) {
    const s = this.rs(roomId);
    if (typeof messageId !== 'string' || !messageId) return false;
    const list = s.sorted();
    const at = (id) => list.findIndex((m) => m.id === id);
    const now = at(messageId);
    if (now >= 0 && s.lastRead && at(s.lastRead) > now) return false; // behind what we know
    s.lastRead = messageId;
    if (!this.recount(roomId)) s.unread = 0;
    return true;
  }

  /** Where the "New messages" line goes in a room being opened (js/readstate.js). */
  placeDivider(roomId) {
    const s = this.rs(roomId);
    s.divider = dividerBefore(s.sorted(), s.lastRead, s.unread, (u) => this.isMe(u));
    s.dividerShown = false;
  }

  /** Users who share a direct room or a small group with me (the gateway tells their presence). */
  contacts() {
    const out = new Set();
    for (const room of this.rooms.values()) {
      if (!hasMemberList(room)) continue;
      for (const m of room.members) if (!this.isMe(m)) out.add(String(m).toLowerCase());
    }
    return out;
  }

  /** My online contacts, by name (empty while my own connection is down: nobody is known). */
  onlineContacts() {
    if (!this.presenceKnown) return [];
    return [...this.contacts()].filter((u) => this.online.has(u)).sort();
  }

  /** My own connection broke: presence is unknown until the next `ready`. */
  presenceLost() {
    this.presenceKnown = false;
    this.online.clear();
    this.presenceTick += 1;
    this.lostTick = this.presenceTick;
  }

  /** member_joined / member_left: the room object and a big group's cached pages follow. */
  applyMemberEvent(roomId, username, joined, count) {
    const room = this.rooms.get(roomId);
    if (!room) return null;
    const next = applyMemberEvent(room, username, joined, count);
    this.rooms.set(roomId, next);
    const pages = this.memberPages.get(roomId);
    if (pages) pages.applyChange(username, joined, next.member_count);
    return next;
  }

  dropMemberPages(roomId) {
    const p = this.memberPages.get(roomId);
    if (p) p.dispose();
    this.memberPages.delete(roomId);
  }

  removeRoom(id) {
    this.rooms.delete(id);
    this.dropMemberPages(id);
    this.state.delete(id);
    this.muted.delete(id);
    this.order = this.order.filter((x) => x !== id);
    for (const [cmid, p] of this.pending) if (p.room === id) this.pending.delete(cmid);
    for (const [cmid, c] of this.changes) if (c.room === id) this.changes.delete(cmid);
    this.previews.delete(id);
    if (this.activeRoomId === id) this.activeRoomId = null;
    this.savePending();
    this.saveChanges();
  }

  touch(id) {
    this.order = [id, ...this.order.filter((x) => x !== id)];
  }

  orderedRooms() {
    return this.order.map((id) => this.rooms.get(id)).filter(Boolean);
  }

  peerOf(room) {
    if (!room || room.kind !== 'direct') return null;
    const members = Array.isArray(room.members) ? room.members : [];
    return members.find((m) => !this.isMe(m)) || members[0] || null;
  }

  roomName(room) {
    if (!room) return '';
    if (room.kind === 'direct') return this.peerOf(room) || 'Direct chat';
    return room.name || 'Group';
  }

  /**
   * Does the room object say I am a member? A big group's object has no list: it cannot say
   * I am not (the server tells me with a `left` frame), so the answer is yes.
   */
  isMember(room) {
    if (!hasMemberList(room)) return true;
    return room.members.some((m) => this.isMe(m));
  }

  // ---- presence
  /** A presence change we were told of (a contact, or a user of our presence_sub). */
  setPresence(username, online) {
    const name = String(username).toLowerCase();
    if (online) this.online.add(name);
    else this.online.delete(name);
    this.presenceTick += 1;
    this.presenceAt.set(name, this.presenceTick);
  }

  /** A presence frame of either form: `{username, online}` or `{changes: [{username, online}]}`
   *  (several changes at once, and the answer to a presence_sub). True if it changed anything. */
  applyPresenceFrame(f) {
    const changes = f && Array.isArray(f.changes) ? f.changes : [f];
    let any = false;
    for (const c of changes) {
      if (!c || typeof c.username !== 'string' || !c.username) continue;
      this.setPresence(c.username, c.online === true);
      any = true;
    }
    return any;
  }

  /** `online` from a fetch (a members page, GET /api/presence) asked for at `tick`: newer than
   *  what we knew, unless a presence frame about that user came since it was asked for. */
  noteFetchedPresence(members, tick) {
    if (tick < this.lostTick) return; // asked before my connection broke: out of date
    for (const m of members || []) {
      if (!m || typeof m.username !== 'string') continue;
      const name = m.username.toLowerCase();
      if ((this.presenceAt.get(name) || 0) > tick) continue;
      if (m.online === true) this.online.add(name);
      else this.online.delete(name);
    }
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
      const held = s.msgs.get(raw.id);
      if (held) {
        if (isLaterState(held, raw)) this._replace(s, held, raw);
        continue;
      }
      const msg = { ...raw, _ms: sentMs(raw) };
      s.msgs.set(msg.id, msg);
      s._sorted = null;
      if (msg._ms > s.lastMs) s.lastMs = msg._ms;
      added.push(msg);
      s.tail.delete(msg.id);
    }
    return added;
  }

  _replace(s, held, raw) {
    const msg = { ...raw, _ms: held._ms, _v: (held._v || 0) + 1 };
    s.msgs.set(msg.id, msg);
    s._sorted = null;
    s.version += 1;
    this._touchPreview(msg);
  }

  /**
   * A live message (a `message` frame, an ack). Into the window when it shows the newest
   * messages; kept aside (`tail`) while the window is one opened further back (a search
   * result), so that no gap is shown: it joins when the window reaches the present. Returns
   * the messages that were new to us.
   */
  mergeLive(roomId, messages) {
    const s = this.rs(roomId);
    if (!s.hasNewer) return this.merge(roomId, messages);
    const added = [];
    for (const raw of messages) {
      if (!raw || typeof raw.id !== 'string') continue;
      if (this.isMe(raw.sender) && raw.client_msg_id && this.pending.has(raw.client_msg_id)) {
        this.pending.delete(raw.client_msg_id);
        this.savePending();
      }
      if (s.msgs.has(raw.id)) {
        this.merge(roomId, [raw]);
        continue;
      }
      const had = s.tail.get(raw.id);
      if (had && !isLaterState(had, raw)) continue;
      const msg = { ...raw, _ms: sentMs(raw) };
      s.tail.set(msg.id, msg);
      if (!had) added.push(msg);
    }
    return added;
  }

  /**
   * A `message_changed` frame (or my change's ack): the message as it is now. Applied to the
   * copy we hold (window, tail, preview). A message we do not hold is taken only where it
   * cannot open a gap: after everything held in a room showing its newest messages (an edit
   * that overtook its message). True if something on screen may have changed.
   */
  applyChanged(msg) {
    if (!msg || typeof msg.id !== 'string' || typeof msg.room !== 'string') return false;
    const s = this.state.get(msg.room);
    let changed = false;
    if (s) {
      if (s.msgs.has(msg.id)) {
        const before = s.version;
        this.merge(msg.room, [msg]);
        changed = s.version !== before;
      } else if (s.tail.has(msg.id)) {
        if (isLaterState(s.tail.get(msg.id), msg)) {
          s.tail.set(msg.id, { ...msg, _ms: sentMs(msg) });
          changed = true;
        }
      } else if (!s.hasNewer && s.loaded === true) {
        const newest = s.newest();
        const m = { ...msg, _ms: sentMs(msg) };
        if (!newest || compareMessages(newest, m) < 0) changed = this.merge(msg.room, [msg]).length > 0;
      }
    }
    const p = this.previews.get(msg.room);
    if (p && p.id === msg.id && isLaterState(p, msg)) {
      this.previews.set(msg.room, { ...msg, _ms: sentMs(msg) });
      changed = true;
    }
    return changed;
  }

  _touchPreview(msg) {
    const p = this.previews.get(msg.room);
    if (p && p.id === msg.id) this.previews.set(msg.room, msg);
  }

  /** The newest message of a room as far as we know (the conversation list's preview). */
  preview(roomId) {
    const s = this.state.get(roomId);
    let best = s ? s.latest() : null;
    const p = this.previews.get(roomId);
    if (p && (!best || compareMessages(best, p) < 0)) best = p;
    return best;
  }

  /** A fetched preview (the newest message of a room we hold nothing of). */
  setPreview(roomId, msg) {
    if (!msg || typeof msg.id !== 'string') return;
    const cur = this.previews.get(roomId);
    const m = { ...msg, _ms: sentMs(msg) };
    if (!cur || compareMessages(cur, m) < 0 || (cur.id === m.id && isLaterState(cur, m))) {
      this.previews.set(roomId, m);
    }
  }

  /** The window reached the newest messages: what came live meanwhile joins it. */
  attach(roomId) {
    const s = this.rs(roomId);
    s.hasNewer = false;
    const tail = [...s.tail.values()];
    s.tail.clear();
    if (tail.length) this.merge(roomId, tail);
  }

  /** My newest message of a room that I can edit (the Up key). */
  lastEditable(roomId) {
    const s = this.state.get(roomId);
    if (!s || s.hasNewer) return null;
    const list = s.sorted();
    for (let i = list.length - 1; i >= 0; i -= 1) {
      const m = list[i];
      if (this.isMe(m.sender) && !isNotice(m) && !m.deleted) return m;
    }
    return null;
  }

  // ---- my edits and deletes until their ack (sent like messages: js/outbox.js)
  addChange(kind, roomId, messageId, body = null) {
    const c = {
      cmid: crypto.randomUUID(),
      kind, // edit | delete
      room: roomId,
      messageId,
      body,
      createdMs: Date.now(),
      state: 'sending',
      transmitted: false,
      code: null,
      error: null,
    };
    this.changes.set(c.cmid, c);
    this.saveChanges();
    return c;
  }

  /** The newest change of mine still waiting for a message (shown on it). */
  changeFor(messageId) {
    let found = null;
    for (const c of this.changes.values()) if (c.messageId === messageId) found = c;
    return found;
  }

  saveChanges() {
    try {
      const list = [...this.changes.values()].filter((c) => c.state === 'sending');
      sessionStorage.setItem(CHANGES_KEY, JSON.stringify(list));
    } catch { /* storage full or disabled */ }
  }

  loadChanges() {
    try {
      for (const c of JSON.parse(sessionStorage.getItem(CHANGES_KEY) || '[]')) {
        if (c && c.cmid && c.room && c.messageId && (c.kind === 'edit' || c.kind === 'delete')) {
          this.changes.set(c.cmid, { ...c, transmitted: true });
        }
      }
    } catch { /* ignore */ }
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
    return roomId && message ? this.mergeLive(roomId, [message]) : [];
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
    sessionStorage.removeItem(CHANGES_KEY);
  }

  /** The title's count: unread messages of the rooms I have not muted. */
  totalUnread() {
    let n = 0;
    for (const id of this.order) if (!this.muted.has(id)) n += this.state.get(id)?.unread || 0;
    return n;
  }
}
