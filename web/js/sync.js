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
  }

  catchUpAll() {
    for (const [id, s] of this.store.state) {
      if (s.loaded === true && this.store.rooms.has(id)) this.catchUp(id);
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
    const epoch = this.epoch;
    const trusted = this.synced;
    this.onChange(roomId);
    try {
      const page = await this.api.history(roomId, { limit: FIRST_PAGE });
      if (this.store.state.get(roomId) !== s) return;
      const msgs = Array.isArray(page?.messages) ? page.messages : [];
      this.store.merge(roomId, msgs);
      s.hasOlder = Boolean(page.has_more);
      s.loaded = true;
      const last = msgs[msgs.length - 1];
      const stillTrusted = trusted && this.synced && this.epoch === epoch;
      // Not trusted (fetched before `synced`): messages the history writer had not stored yet
      // are missing, but they are recent; so the next catch-up starts from the oldest message
      // of this page. If that `synced` came while this page was loading, the catch-up skipped
      // this room: run it now.
      if (last) s.cursor = stillTrusted ? last.id : msgs[0].id;
      if (this.synced && !stillTrusted) this.catchUp(roomId);
    } catch (e) {
      if (this.store.state.get(roomId) === s) s.loaded = false;
      this.onError(e);
    }
    this.onChange(roomId);
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
