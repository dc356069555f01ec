// The login session, shared by every tab of the browser (as in Slack or Mattermost):
//
//  * The refresh token is an HttpOnly, SameSite=Strict cookie scoped to /api/auth/session: no
//    script can read it. The access token lives only in this tab's memory, never in storage.
//  * A tab resumes the session on load with POST /api/auth/session/refresh (the cookie), so a
//    new tab, a reload and a restarted browser are signed in without a password.
//  * The refresh token rotates on every use and a used one coming back ends the session (a
//    replay), so two tabs must never refresh at once: refreshes are serialised across tabs
//    with the Web Locks API, and a tab that got a new access token posts it on a
//    BroadcastChannel so the others adopt it instead of refreshing. Without Web Locks (a page
//    served over plain HTTP from another host) a claim on the channel stands in for the lock.
//  * Logout posts `logout` on the channel (every tab shows the login screen at once), then ends
//    the session on the server (which closes its sockets with 4001 and drops the cookie). A
//    logout that could not reach the server is remembered (localStorage holds only that flag)
//    and sent again on the next load, before anything resumes.
//  * Logging in in one tab signs in the tabs showing the login screen.

const CHANNEL = 'chat-session-v2';
const LOCK = 'chat-session-refresh';
const LOGOUT_PENDING = 'chat.logout-pending.v1';
const LEGACY_KEY = 'chat.session.v1'; // tokens in sessionStorage, before the cookie session
const SESSION_HEADER = { 'X-Chat-Session': 'cookie' };
const REFRESH_AHEAD_MS = 60_000; // refresh this long before the access token expires
const FRESH_MS = 30_000; // a token with at least this long to live needs no refresh
const RETRY_MS = 15_000; // a scheduled refresh that failed on the network is tried again
const CLAIM_WAIT_MS = 80; // no Web Locks: how long to listen for a rival claim
const CLAIM_HOLD_MS = 5_000; // ... and how long to wait for the rival's token

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

export class SessionError extends Error {}

/** Remove what older versions of the client kept in storage (tokens in sessionStorage), and
 *  end that old session on the server: its refresh token is dropped from the page for good. */
function migrateLegacy() {
  let old = null;
  for (const store of [window.sessionStorage, window.localStorage]) {
    try {
      const raw = store.getItem(LEGACY_KEY);
      if (raw) old = old || JSON.parse(raw);
      store.removeItem(LEGACY_KEY);
    } catch { /* storage disabled or bad JSON: nothing to migrate */ }
  }
  if (old && typeof old.access === 'string') {
    fetch('/api/auth/logout', {
      method: 'POST',
      headers: { Authorization: `Bearer ${old.access}` },
      credentials: 'same-origin',
    }).catch(() => { /* best effort: the token is gone from the page either way */ });
  }
}

export class Session extends EventTarget {
  constructor() {
    super();
    migrateLegacy();
    this.data = null; // {access, expiresAt, username}: in memory only
    this.gen = 0; // +1 whenever a token is set (here or adopted from another tab)
    this.tabId = (crypto.randomUUID && crypto.randomUUID()) || String(Math.random()).slice(2);
    this._refreshing = null;
    this._endedGen = 0; // `gen` right after the last end(): a refresh begun before it is void
    this._timer = null;
    this._claims = new Map(); // tab id -> ms: rival refresh claims (no Web Locks)
    this.locks = navigator.locks && typeof navigator.locks.request === 'function'
      ? navigator.locks : null;
    this.channel = 'BroadcastChannel' in window ? new BroadcastChannel(CHANNEL) : null;
    if (this.channel) this.channel.onmessage = (ev) => this._onPeer(ev.data);
  }

  get loggedIn() { return Boolean(this.data); }
  get access() { return this.data ? this.data.access : null; }
  get username() { return this.data ? this.data.username : null; }
  get expiresAt() { return this.data ? this.data.expiresAt : 0; }

  fresh(ms = FRESH_MS) { return Boolean(this.data) && Date.now() < this.data.expiresAt - ms; }

  setUsername(username) {
    if (this.data && username) this.data.username = username;
  }

  // ------------------------------------------------------------------ server calls

  async _post(path, token) {
    const headers = { Accept: 'application/json', ...SESSION_HEADER };
    if (token) headers.Authorization = `Bearer ${token}`;
    return fetch(path, { method: 'POST', headers, credentials: 'same-origin', cache: 'no-store' });
  }

  /**
   * On load: resume the browser's session from its cookie. 'ok' (signed in), 'none' (no
   * session: show the login screen) or 'offline' (the server could not be reached).
   */
  async resume() {
    if (localStorage.getItem(LOGOUT_PENDING)) {
      await this._finishLogout();
      return 'none';
    }
    try {
      return (await this.refresh()) ? 'ok' : 'none';
    } catch {
      return 'offline';
    }
  }

  /** A login (`X-Chat-Session: cookie`) answered with a token; the cookie holds the rest. */
  adoptLogin(body, username) {
    try { localStorage.removeItem(LOGOUT_PENDING); } catch { /* ignore */ }
    this._set(body, username, { broadcast: 'login' });
  }

  /**
   * A new access token from the cookie. Resolves true (stored), false (no session: the cookie
   * is missing, expired or revoked); rejects on network trouble. One at a time in this tab,
   * and one at a time across the browser's tabs.
   */
  refresh() {
    if (!this._refreshing) {
      const seen = this.gen;
      this._refreshing = this._serialised(async () => {
        // another tab refreshed while we waited for our turn: take its token
        if (this.gen !== seen && this.fresh()) return true;
        return this._refreshNow();
      }).finally(() => { this._refreshing = null; });
    }
    return this._refreshing;
  }

  async _serialised(fn) {
    if (this.locks) return this.locks.request(LOCK, fn);
    // No Web Locks: claim the refresh on the channel; the lower tab id wins a tie, the loser
    // waits for the winner's token (and refreshes itself only if none comes).
    const seen = this.gen;
    this._broadcast({ type: 'claim', tab: this.tabId });
    await sleep(CLAIM_WAIT_MS);
    const now = Date.now();
    const rivals = [...this._claims].filter(([tab, at]) => now - at < CLAIM_HOLD_MS && tab < this.tabId);
    if (rivals.length) {
      for (let waited = 0; waited < CLAIM_HOLD_MS && this.gen === seen; waited += 50) await sleep(50);
    }
    return fn();
  }

  async _refreshNow() {
    const began = this.gen;
    const res = await this._post('/api/auth/session/refresh');
    // a logout (here or in another tab) while it was on its way: its answer is void
    if (this._endedGen > began) return false;
    if (res.ok) {
      const body = await res.json();
      if (!body || typeof body.access_token !== 'string') throw new SessionError('bad refresh answer');
      this._set(body, body.username || this.username, { broadcast: 'refresh' });
      return true;
    }
    if (res.status === 401 || res.status === 403) {
      if (this.data) this.end({ broadcast: true, why: 'expired' });
      return false;
    }
    throw new SessionError(`refresh answered ${res.status}`);
  }

  /** Log out: every tab of the browser at once, then the session on the server. */
  async logout() {
    const token = this.access;
    try { localStorage.setItem(LOGOUT_PENDING, '1'); } catch { /* ignore */ }
    this.end({ broadcast: true, why: 'logout' });
    await this._finishLogout(token);
  }

  async _finishLogout(token) {
    try {
      const res = await this._post('/api/auth/session/logout', token);
      if (res.ok || res.status === 401) localStorage.removeItem(LOGOUT_PENDING);
    } catch { /* offline: sent again on the next load */ }
  }

  // ------------------------------------------------------------------ local state

  _set(body, username, { broadcast }) {
    const ttl = Number(body.expires_in) || 900;
    const before = this.username;
    this.data = {
      access: body.access_token,
      expiresAt: Date.now() + ttl * 1000,
      username: String(username || body.username || '').toLowerCase(),
    };
    this.gen += 1;
    this._schedule();
    // a new login signs in the tabs on the login screen; a refresh only feeds signed-in tabs
    if (broadcast) this._broadcast({ type: 'token', kind: broadcast, tab: this.tabId, ...this.data });
    this.dispatchEvent(new CustomEvent('token', {
      detail: { switched: Boolean(before) && before !== this.data.username },
    }));
  }

  /** Forget the token (the session ended, here or in another tab). */
  end({ broadcast = false, why = 'expired' } = {}) {
    const had = Boolean(this.data);
    this.data = null;
    this.gen += 1;
    this._endedGen = this.gen;
    clearTimeout(this._timer);
    this._timer = null;
    if (broadcast) this._broadcast({ type: 'logout', tab: this.tabId, why });
    if (had) this.dispatchEvent(new CustomEvent('ended', { detail: { why } }));
  }

  /** Refresh ahead of expiry (every tab schedules it; the lock makes one tab do it). */
  _schedule(delay) {
    clearTimeout(this._timer);
    if (!this.data) return;
    const ms = delay ?? Math.max(1_000, this.data.expiresAt - Date.now() - REFRESH_AHEAD_MS
      - Math.random() * 10_000);
    this._timer = setTimeout(() => {
      if (!this.data) return;
      if (this.fresh(REFRESH_AHEAD_MS)) {
        this._schedule(); // another tab's token arrived meanwhile
        return;
      }
      this.refresh().catch(() => this._schedule(RETRY_MS));
    }, ms);
  }

  _broadcast(msg) {
    try { this.channel?.postMessage(msg); } catch { /* channel closed */ }
  }

  _onPeer(msg) {
    if (!msg || typeof msg !== 'object' || msg.tab === this.tabId) return;
    if (msg.type === 'claim' && typeof msg.tab === 'string') {
      this._claims.set(msg.tab, Date.now());
    } else if (msg.type === 'token' && typeof msg.access === 'string') {
      this._claims.delete(msg.tab);
      // signed out here: only a login signs this tab in (not a refresh that crossed a logout)
      if (!this.data && msg.kind !== 'login') return;
      // signed in: only a newer token than ours (or another user's: a login elsewhere)
      if (this.data && msg.username === this.data.username && msg.expiresAt <= this.data.expiresAt) return;
      this._set({ access_token: msg.access, expires_in: (msg.expiresAt - Date.now()) / 1000 },
        msg.username, { broadcast: null });
    } else if (msg.type === 'logout') {
      this.end({ broadcast: false, why: msg.why === 'logout' ? 'peer-logout' : 'expired' });
    }
  }
}
