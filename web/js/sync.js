// History: the first page of a room, older pages as the user scrolls up, and the resume rule
// (docs/PROTOCOL.md) after every (re)connect:
//
//   * after `ready`, and again on every `{"type":"synced"}`, for each room whose history we have
//     loaded: GET /api/history/{room}?after=<cursor>&limit=200, repeated while has_more, merged by
//     id (so nothing is shown twice);
//   * `{"type":"resync"}` (the gateway lost the broker; the live stream may have a hole): only
//     wait for the next `synced`, which triggers the catch-up again.
//
// The cursor of a room is the newest message id that we know has no gap before it. It moves
// only with history pages fetched while the live stream was complete and the gateway had said
// `synced` (history complete up to the moment the live stream began); messages that arrive live
// never move it. So a message the history writer had not stored yet when we looked, or one
// that was in flight when a gateway died, is still fetched at the next `synced`.

import { compareMessages } from './store.js';

const FIRST_PAGE = 50;
const CATCH_UP_PAGE = 200;
const MAX_PAGES = 500; // safety stop for one catch-up
const SYNCED_FALLBACK_MS = 15_000; // a gateway that never sends `synced`: act as if it did

export class Sync {
  constructor({ api, store, onChange, onError, onNew }) {
    this.api = api;
    this.store = store;
    this.onChange = onChange; // (roomId) => void
    this.onError = onError; // (err) => void
    this.onNew = onNew; // (roomId, addedMessages, {live:false}) => void
    this.synced = false;
    this.serverSendsSynced = false;
    this.epoch = 0; // +1 at every break of the live stream
    this.running = new Map(); // roomId -> promise of the catch-up in progress
    this.again = new Set();
    this.fallback = null;
  }

  reset() {
    this.synced = false;
    this.epoch += 1;
    clearTimeout(this.fallback);
    this.running.clear();
    this.again.clear();
  }

  /** The live stream stopped (socket closed) or may have a hole (`resync`). */
  onBreak() {
    this.synced = false;
    this.epoch += 1;
    clearTimeout(this.fallback);
    this.store.dropUnloaded();
  }

  onReady() {
    this.synced = false;
    clearTimeout(this.fallback);
    if (!this.serverSendsSynced) {
      const epoch = this.epoch;
      this.fallback = setTimeout(() => {
        if (!this.synced && this.epoch === epoch) this._markSynced();
      }, SYNCED_FALLBACK_MS);
    }
    this.catchUpAll();
  }

  onSynced() {
    this.serverSendsSynced = true;
    clearTimeout(this.fallback);
    this._markSynced();
  }

  onResync() {
    this.onBreak(); // wait for the next `synced`
  }

  _markSynced() {
    this.synced = true;
    this.catchUpAll();
    this.refreshRecent();
  }

  /**
   * Edits and deletes of messages we hold come live (`message_changed`); those made while the
   * connection was down do not. After every `synced`, the newest page of each room we hold is
   * read again and merged: a later state of a message replaces ours (store.merge).
   */
  refreshRecent() {
    for (const [id, s] of this.store.state) {
      if (s.loaded !== true || s.hasNewer || !this.store.rooms.has(id)) continue;
      this.api.history(id, { limit: FIRST_PAGE })
        .then((page) => {
          if (this.store.state.get(id) !== s || s.hasNewer) return;
          const msgs = Array.isArray(page?.messages) ? page.messages : [];
          const oldest = s.oldest();
          // only what overlaps the window (an older page would open a gap)
          const inWindow = msgs.filter((m) => oldest && s.msgs.has(m.id));
          const before = s.version;
          this.store.merge(id, inWindow);
          if (s.version !== before) this.onChange(id);
        })
        .catch(() => { /* the next synced tries again */ });
    }
  }

  catchUpAll() {
    for (const [id, s] of this.store.state) {
      // a window in the past (a search result) reaches the present by scrolling (loadNewer)
      if (s.loaded === true && !s.hasNewer && this.store.rooms.has(id)) this.catchUp(id);
    }
  }

  /** One catch-up per room at a time; a request during one runs again right after it. */
  catchUp(roomId) {
    if (this.running.has(roomId)) {
      this.again.add(roomId);
      return this.running.get(roomId);
    }
    const p = this._catchUp(roomId)
      .catch((e) => this.onError(e))
      .finally(() => {
        this.running.delete(roomId);
        if (this.again.delete(roomId)) this.catchUp(roomId);
      });
    this.running.set(roomId, p);
    return p;
  }

  async _catchUp(roomId) {
    const s = this.store.rs(roomId);
    const epoch = this.epoch;
    const trusted = this.synced; // pages fetched now are gap-free up to the live stream
    let after = s.cursor;
    for (let i = 0; i < MAX_PAGES; i += 1) {
      const page = await this.api.history(roomId, after
        ? { after, limit: CATCH_UP_PAGE }
        : { limit: CATCH_UP_PAGE });
      if (this.store.state.get(roomId) !== s) return; // room left or logged out meanwhile
      const msgs = Array.isArray(page?.messages) ? page.messages : [];
      const added = this.store.merge(roomId, msgs);
      if (!after && !page.has_more) s.hasOlder = false;
      const last = msgs[msgs.length - 1];
      const stillTrusted = trusted && this.synced && this.epoch === epoch;
      if (last && stillTrusted) s.cursor = last.id;
      if (added.length) this.onNew(roomId, added, { live: false });
      this.onChange(roomId);
      if (!after || !last || !page.has_more) break; // a newest-page fetch is one page
      after = last.id;
    }
  }

  /** The newest page of a room, when it is first opened. */
  async loadFirst(roomId) {
    const s = this.store.rs(roomId);
    if (s.loaded) return;
    s.loaded = 'loading';
    const gen = ++s.loadGen;
    const epoch = this.epoch;
    const trusted = this.synced;
    this.onChange(roomId);
    try {
      const page = await this.api.history(roomId, { limit: FIRST_PAGE });
      if (this.store.state.get(roomId) !== s || s.loadGen !== gen) return; // replaced meanwhile
      const msgs = Array.isArray(page?.messages) ? page.messages : [];
      this.store.merge(roomId, msgs);
      s.hasOlder = Boolean(page.has_more);
      s.hasNewer = false;
      s.loaded = true;
      // live messages kept aside while a window in the past was shown: those after this page
      const first = s.oldest();
      const tail = [...s.tail.values()].filter((m) => first && compareMessages(first, m) < 0);
      s.tail.clear();
      if (tail.length) this.store.merge(roomId, tail);
      const last = msgs[msgs.length - 1];
      const stillTrusted = trusted && this.synced && this.epoch === epoch;
      // Not trusted (fetched before `synced`): messages the history writer had not stored yet
      // are missing, but they are recent; so the next catch-up starts from the oldest message
      // of this page. If that `synced` came while this page was loading, the catch-up skipped
      // this room: run it now.
      if (last) s.cursor = stillTrusted ? last.id : msgs[0].id;
      if (this.synced && !stillTrusted) this.catchUp(roomId);
    } catch (e) {
      if (this.store.state.get(roomId) === s && s.loadGen === gen) s.loaded = false;
      this.onError(e);
    }
    this.onChange(roomId);
  }

  /**
   * Open a room at one message (a search result): the page around it (`around=`, API ext).
   * What we held of the room is replaced by that window; when newer messages lie after it
   * (`has_more_after`), the room is "in the past" (`hasNewer`) until scrolling down reaches
   * the present (loadNewer) or the user jumps there (loadPresent). A server without `around`
   * answers the newest page: older pages are then read until the message is in.
   * Resolves to true when the message is held.
   */
  async loadAround(roomId, messageId) {
    const s = this.store.rs(roomId);
    if (s.msgs.has(messageId) && s.loaded === true) return true;
    const epoch = this.epoch;
    const trusted = this.synced;
    const wasLoaded = s.loaded === true;
    s.loaded = 'loading';
    const gen = ++s.loadGen;
    this.onChange(roomId);
    let page;
    try {
      page = await this.api.history(roomId, { around: messageId, limit: FIRST_PAGE });
    } catch (e) {
      if (this.store.state.get(roomId) === s && s.loadGen === gen) s.loaded = wasLoaded;
      this.onChange(roomId);
      throw e;
    }
    if (this.store.state.get(roomId) !== s || s.loadGen !== gen) return false;
    // what we held (live messages included), kept aside when newer than the new window
    const live = [...s.msgs.values(), ...s.tail.values()];
    const msgs = Array.isArray(page?.messages) ? page.messages : [];
    s.msgs.clear();
    s._sorted = null;
    s.tail.clear();
    this.store.merge(roomId, msgs);
    s.hasOlder = Boolean(page.has_more);
    s.hasNewer = page.has_more_after === true;
    s.loaded = true;
    const newest = s.newest();
    // what we held that is newer than the window: live messages, kept aside or merged back
    for (const m of live) {
      if (newest && compareMessages(newest, m) < 0) s.tail.set(m.id, m);
    }
    if (!s.hasNewer) {
      this.store.attach(roomId);
      const last = msgs[msgs.length - 1];
      const stillTrusted = trusted && this.synced && this.epoch === epoch;
      s.cursor = last ? (stillTrusted ? last.id : msgs[0].id) : null;
      if (this.synced && !stillTrusted) this.catchUp(roomId);
    } else {
      s.cursor = null;
    }
    this.onChange(roomId);
    // no `around` on this server: the newest page came; read back until the message is in
    for (let i = 0; i < 20 && !s.msgs.has(messageId) && s.hasOlder; i += 1) {
      await this.loadOlder(roomId);
      if (this.store.state.get(roomId) !== s) return false;
    }
    return s.msgs.has(messageId);
  }

  /** A newer page of a window in the past (scrolling down); the present reached: attached. */
  async loadNewer(roomId) {
    const s = this.store.rs(roomId);
    if (s.loaded !== true || !s.hasNewer || s.loadingNewer) return;
    const newest = s.newest();
    if (!newest) return;
    s.loadingNewer = true;
    const epoch = this.epoch;
    const trusted = this.synced;
    this.onChange(roomId);
    try {
      const page = await this.api.history(roomId, { after: newest.id, limit: FIRST_PAGE });
      if (this.store.state.get(roomId) !== s) return;
      const msgs = Array.isArray(page?.messages) ? page.messages : [];
      this.store.merge(roomId, msgs);
      if (!page.has_more) {
        const last = s.newest();
        this.store.attach(roomId);
        const stillTrusted = trusted && this.synced && this.epoch === epoch;
        // the window is gap-free up to `last` only if read while the stream was synced
        s.cursor = stillTrusted && last ? last.id : (s.oldest() ? s.oldest().id : null);
        if (this.synced && !stillTrusted) this.catchUp(roomId);
        this.onNew(roomId, msgs, { live: false });
      }
    } catch (e) {
      this.onError(e);
    } finally {
      s.loadingNewer = false;
    }
    this.onChange(roomId);
  }

  /** Leave a window in the past for the newest messages ("Jump to present"). */
  async loadPresent(roomId) {
    const s = this.store.rs(roomId);
    if (!s.hasNewer) return;
    const newer = [...s.tail.values()];
    s.msgs.clear();
    s._sorted = null;
    for (const m of newer) s.tail.set(m.id, m);
    s.hasNewer = false;
    s.loaded = false;
    s.hasOlder = true;
    s.cursor = null;
    await this.loadFirst(roomId);
  }

  /** An older page (scrolling up). */
  async loadOlder(roomId) {
    const s = this.store.rs(roomId);
    if (s.loaded !== true || !s.hasOlder || s.loadingOlder) return;
    const oldest = s.oldest();
    if (!oldest) {
      s.hasOlder = false;
      return;
    }
    s.loadingOlder = true;
    this.onChange(roomId);
    try {
      const page = await this.api.history(roomId, { before: oldest.id, limit: FIRST_PAGE });
      if (this.store.state.get(roomId) !== s) return;
      this.store.merge(roomId, Array.isArray(page?.messages) ? page.messages : []);
      s.hasOlder = Boolean(page.has_more);
    } catch (e) {
      this.onError(e);
    } finally {
      s.loadingOlder = false;
    }
    this.onChange(roomId);
  }
}
