// Members of a room, as API v1.1 gives them: a room object lists `members` only for rooms of up
// to 100; a bigger group pages through GET /api/rooms/{id}/members (by username) and the client
// keeps a cache of those pages for the rows on screen. Pure logic, no DOM: tests run it alone.

export const SMALL_ROOM_MAX = 100; // rooms up to this size list their members (API.md "Rooms")
export const PAGE = 100; // rows asked for per page while scrolling
export const MAX_LIMIT = 1000; // the API's largest page: used to skip ahead after a jump
export const MAX_SUB = 500; // presence_sub takes at most this many users
const RETRY_MS = 2_000; // after a failed page, wait this long before asking again

/** Does this room object list its members completely? (A big group's object has no list.) */
export function hasMemberList(room) {
  return Boolean(room) && Array.isArray(room.members)
    && !(typeof room.member_count === 'number' && room.member_count > SMALL_ROOM_MAX);
}

/** How many members the room has: `member_count`, else the length of its list. */
export function memberCount(room) {
  if (!room) return 0;
  if (typeof room.member_count === 'number') return room.member_count;
  return Array.isArray(room.members) ? room.members.length : 0;
}

/**
 * The room object after `username` joined (or left) and the room now has `count` members.
 * A list that cannot be known complete any more (over 100 members, or the count does not
 * match) is dropped: the member panel then pages through the API instead.
 */
export function applyMemberEvent(room, username, joined, count) {
  const name = String(username).toLowerCase();
  const out = { ...room };
  if (typeof count === 'number' && Number.isFinite(count)) out.member_count = count;
  if (Array.isArray(room.members)) {
    const set = new Set(room.members);
    if (joined) set.add(name);
    else set.delete(name);
    if (typeof count !== 'number') out.member_count = set.size;
    if (out.member_count > SMALL_ROOM_MAX || set.size !== out.member_count) delete out.members;
    else out.members = [...set].sort();
  }
  return out;
}

/**
 * Rows [first, last] to have in the DOM for a list of `total` rows of `rowPx` pixels scrolled
 * to `scrollTop` in a viewport `viewPx` high, with `overscan` extra rows on each side.
 * `last < first` when there is nothing to show.
 */
export function visibleRange(scrollTop, viewPx, rowPx, total, overscan = 0) {
  if (total <= 0 || viewPx <= 0) return { first: 0, last: -1 };
  const top = Math.max(0, Math.floor(scrollTop / rowPx));
  const bottom = Math.ceil((scrollTop + viewPx) / rowPx) - 1;
  const first = Math.max(0, Math.min(total - 1, top - overscan));
  const last = Math.min(total - 1, Math.max(first, bottom + overscan));
  return { first, last };
}

/** The usernames to subscribe to for rows [first, last]: loaded ones, not me, at most `max`. */
export function subscriptionList(rowAt, first, last, isMe = () => false, max = MAX_SUB) {
  const out = [];
  const seen = new Set();
  for (let i = first; i <= last && out.length < max; i += 1) {
    const row = rowAt(i);
    if (!row || !row.username) continue;
    const name = row.username.toLowerCase();
    if (isMe(name) || seen.has(name)) continue;
    seen.add(name);
    out.push(name);
  }
  return out;
}

/**
 * The cached pages of one big room's member list. The API pages by username (`after` the last
 * one of the previous page), so the cache is a chain of pages from the first: to show row i,
 * every page before it is fetched (a jump far down asks for up to MAX_LIMIT rows at a time).
 *
 * A member joining or leaving changes one page and shifts every row after it: the page that
 * holds the change and every page after it are dropped (the rows stay on screen, patched, as
 * `stale` until they are fetched again); the list on screen then asks for its rows again.
 * A change in a page wholly above the rows on screen is patched into that page instead.
 * Usernames compare as the server orders them (binary: ASCII a-z 0-9 _ . -, utf8mb4_bin).
 */
export class MemberPages {
  /**
   * @param {(after: string|null, limit: number) => Promise<{members: Array, next: string|null}>} fetchPage
   * @param {number} count  the room's member_count
   * @param {() => void} onChange  rows arrived (or a fetch failed): render again
   */
  constructor(fetchPage, count, onChange = () => {}, opts = {}) {
    const { page = PAGE, maxLimit = MAX_LIMIT, retryMs = RETRY_MS } = opts;
    this.fetchPage = fetchPage;
    this.onChange = onChange;
    this.page = page;
    this.maxLimit = maxLimit;
    this.retryMs = retryMs;
    this.count = Number(count) || 0;
    this.pages = []; // [{after, rows: [{username, online}]}], a chain from the first member
    this.loaded = 0; // rows in `pages`
    this.complete = false; // the last page is in (its `next` was null)
    this.stale = []; // rows by index, shown where `pages` has none yet (after a change)
    this.want = -1; // the highest row index asked for
    this.shownFirst = 0; // the first row index on screen (as the last ensure() said)
    this.gen = 0; // bumped by every change: answers to older requests are dropped
    this.loading = false;
    this.error = null;
    this.retryAt = 0;
    this.retryTimer = null;
    this.requests = 0; // pages asked for (for tests and support)
  }

  /** Rows the list has: the fetched total once complete, else member_count. */
  total() {
    return this.complete ? this.loaded : Math.max(this.count, this.loaded);
  }

  /** The row at index i: {username, online, stale?} or null (not fetched yet). */
  row(i) {
    if (i < 0) return null;
    if (i < this.loaded) {
      let k = i;
      for (const p of this.pages) {
        if (k < p.rows.length) return p.rows[k];
        k -= p.rows.length;
      }
      return null;
    }
    const s = this.stale[i];
    return s ? { ...s, stale: true } : null;
  }

  /** Make sure rows up to index `last` are (being) fetched; rows from `first` are on screen. */
  ensure(last, first = 0) {
    this.shownFirst = first;
    if (last > this.want) this.want = last;
    this._pump();
  }

  setCount(count) {
    const n = Number(count);
    if (!Number.isFinite(n) || n === this.count) return;
    this.count = n;
    if (this.complete && n !== this.loaded) this.invalidate(); // the list changed unseen
  }

  /** Someone joined or left (a member_joined / member_left frame, or our own change). */
  applyChange(username, joined, count) {
    const name = String(username).toLowerCase();
    if (typeof count === 'number' && Number.isFinite(count)) this.count = count;
    const rows = this._rows();
    // the first page whose last name is at or after `name` holds the change
    let k = this.pages.findIndex((p) => p.rows.length && p.rows[p.rows.length - 1].username >= name);
    if (k === -1) {
      // past every fetched page: the last one changes if it was the end of the list; else
      // no fetched page changes (but a page on its way may be stale: it is asked again)
      k = this.complete ? Math.max(0, this.pages.length - 1) : this.pages.length;
    }
    const patched = rows.slice();
    patch(patched, name, joined);
    const page = this.pages[k];
    const start = this.pages.slice(0, k).reduce((n, p) => n + p.rows.length, 0);
    if (page && start + page.rows.length <= this.shownFirst) {
      // a page above the rows on screen: patched in place (it still holds the names after the
      // previous page's last, as the server orders them), nothing is fetched; the rows on
      // screen only move by one. A user far down a big group is not made to fetch the way
      // there again for every change near the top.
      patch(page.rows, name, joined);
      if (!page.rows.length) this.pages.splice(k, 1);
      this.loaded = this.pages.reduce((n, p) => n + p.rows.length, 0);
      this.stale = patched.map((r) => ({ username: r.username, online: r.online }));
      return;
    }
    this._truncate(k, patched);
  }

  /** Forget every page (after a reconnect: changes may have been missed); rows stay as stale. */
  invalidate() {
    this._truncate(0, this._rows());
  }

  dispose() {
    clearTimeout(this.retryTimer);
    this.gen += 1;
    this.want = -1;
  }

  // ---- internals
  _rows() {
    const out = [];
    for (const p of this.pages) out.push(...p.rows);
    // rows not fetched again since the last change are still the best guess past `loaded`
    for (let i = out.length; i < this.stale.length; i += 1) if (this.stale[i]) out[i] = this.stale[i];
    return out.filter(Boolean);
  }

  _truncate(k, staleRows) {
    this.pages = this.pages.slice(0, k);
    this.loaded = this.pages.reduce((n, p) => n + p.rows.length, 0);
    this.complete = false;
    this.stale = staleRows.map((r) => ({ username: r.username, online: r.online }));
    this.gen += 1;
    this.loading = false;
    this.want = -1; // the list on screen asks again (ensure); a list not shown fetches nothing
  }

  _pump() {
    if (this.loading || this.complete || this.loaded > this.want) return;
    const wait = this.retryAt - Date.now();
    if (wait > 0) {
      if (!this.retryTimer) {
        this.retryTimer = setTimeout(() => { this.retryTimer = null; this._pump(); }, wait);
      }
      return;
    }
    const need = this.want + 1 - this.loaded;
    const limit = Math.min(this.maxLimit, Math.max(this.page, Math.ceil(need / this.page) * this.page));
    const last = this.pages[this.pages.length - 1];
    const after = last && last.rows.length ? last.rows[last.rows.length - 1].username : null;
    if (this.pages.length && !after) return; // an empty page in the middle: nothing follows
    const gen = this.gen;
    this.loading = true;
    this.requests += 1;
    Promise.resolve()
      .then(() => this.fetchPage(after, limit))
      .then((data) => {
        if (gen !== this.gen) return;
        this.loading = false;
        this.error = null;
        const rows = ((data && data.members) || [])
          .filter((m) => m && typeof m.username === 'string')
          .map((m) => ({ username: m.username.toLowerCase(), online: m.online === true }));
        this.pages.push({ after, rows });
        this.loaded += rows.length;
        this.complete = !(data && data.next) || rows.length === 0;
        if (this.complete) this.stale = [];
        this.onChange();
        this._pump();
      }, (err) => {
        if (gen !== this.gen) return;
        this.loading = false;
        this.error = err;
        this.retryAt = Date.now() + this.retryMs;
        this.onChange();
      });
  }
}

/**
 * The presence_sub of one connection: the users whose presence the client wants beyond its
 * contacts (the visible rows of a big group's member list). Changes are debounced; an empty
 * list (the panel closed) goes out at once; after a reconnect (`ready`) the list is sent again,
 * as a new connection has no subscription.
 */
export class PresenceSub {
  /**
   * @param {(users: string[]) => boolean} send  send the frame; false if not connected
   * @param {{delayMs?: number, onSent?: (users: string[]) => void}} o
   */
  constructor(send, { delayMs = 250, onSent = () => {} } = {}) {
    this.send = send;
    this.delayMs = delayMs;
    this.onSent = onSent;
    this.wanted = [];
    this.sent = null; // what the current connection has (null: nothing sent on it yet)
    this.timer = null;
  }

  want(users) {
    const list = [...new Set((users || []).map((u) => String(u).toLowerCase()))].slice(0, MAX_SUB);
    if (same(list, this.wanted) && (this.timer || same(list, this.sent || []))) return;
    this.wanted = list;
    clearTimeout(this.timer);
    this.timer = null;
    if (!list.length) this.flush(); // closing the panel: say so at once
    else this.timer = setTimeout(() => this.flush(), this.delayMs);
  }

  flush() {
    clearTimeout(this.timer);
    this.timer = null;
    const list = this.wanted;
    if (same(list, this.sent || (list.length ? null : []))) return;
    if (this.send(list)) {
      this.sent = list;
      this.onSent(list);
    } else {
      this.sent = null; // not connected: `onReady` sends it
    }
  }

  /** A new connection is ready: it has no subscription yet. */
  onReady() {
    this.sent = null;
    if (this.wanted.length) this.flush();
  }

  reset() {
    clearTimeout(this.timer);
    this.timer = null;
    this.wanted = [];
    this.sent = null;
  }
}

/** Insert (joined) or remove `name` in rows sorted by username; nothing if already so. */
function patch(rows, name, joined) {
  const at = rows.findIndex((r) => r.username >= name);
  const there = at !== -1 && rows[at].username === name;
  if (joined && !there) rows.splice(at === -1 ? rows.length : at, 0, { username: name, online: false });
  else if (!joined && there) rows.splice(at, 1);
}

function same(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return false;
  return true;
}
