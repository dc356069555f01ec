// REST calls. Authenticated calls carry the access token; on a 401 the client refreshes the
// token pair once (one refresh in flight at a time) and retries; if that fails the session
// has ended and `onSessionEnded` shows the login screen.

import { errorText } from './errors.js';

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  /** Text for a person. */
  text(extra = {}) {
    return errorText(this.code, this.message, { retryAfter: this.retryAfter, ...extra });
  }
}

const enc = encodeURIComponent;

export class Api {
  constructor(session, { onSessionEnded }) {
    this.session = session;
    this.onSessionEnded = onSessionEnded;
    this._refreshing = null;
  }

  async _fetch(method, path, body, token) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    try {
      return await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch {
      throw new ApiError(0, 'network', errorText('network'));
    }
  }

  async _parse(res) {
    if (res.status === 204) return null;
    let data = null;
    const text = await res.text().catch(() => '');
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (res.ok) return data;
    const err = (data && data.error) || {};
    const retryAfter = Number(res.headers.get('Retry-After')) || null;
    throw new ApiError(
      res.status,
      err.code || `http_${res.status}`,
      err.message || `The server answered ${res.status}.`,
      retryAfter,
    );
  }

  /** An authenticated call with one refresh-and-retry on 401. */
  async call(method, path, body) {
    if (!this.session.loggedIn) throw this._ended();
    await this.ensureFresh();
    let res = await this._fetch(method, path, body, this.session.access);
    if (res.status === 401) {
      const ok = await this.refresh().catch(() => false);
      if (ok) res = await this._fetch(method, path, body, this.session.access);
      if (!ok || res.status === 401) throw this._ended();
    }
    return this._parse(res);
  }

  _ended() {
    this.onSessionEnded('expired');
    return new ApiError(401, 'session_expired', errorText('session_expired'));
  }

  /** Refresh shortly before the access token expires (best effort). */
  async ensureFresh() {
    const exp = this.session.expiresAt;
    if (!exp || Date.now() < exp - 30_000) return;
    try {
      const ok = await this.refresh();
      if (!ok) throw this._ended();
    } catch (e) {
      if (e instanceof ApiError && e.code === 'session_expired') throw e;
      // network trouble: go on with the old token; a 401 will tell
    }
  }

  /**
   * Trade the refresh token for a new pair. Resolves true (new pair stored), false (the
   * refresh token is dead: the session has ended); rejects on network trouble.
   */
  refresh() {
    if (!this._refreshing) {
      this._refreshing = this._doRefresh().finally(() => { this._refreshing = null; });
    }
    return this._refreshing;
  }

  async _doRefresh() {
    const used = this.session.refresh;
    if (!used) return false;
    const res = await this._fetch('POST', '/api/auth/refresh', { refresh_token: used });
    if (res.ok) {
      const pair = await res.json();
      if (this.session.refresh === used) this.session.rotate(used, pair);
      return true;
    }
    // another tab of this session may have rotated it meanwhile
    if (this.session.refresh && this.session.refresh !== used) return true;
    if (res.status === 401 || res.status === 400 || res.status === 422) return false;
    throw new ApiError(res.status, 'refresh_failed', 'Could not refresh the session.');
  }

  // ---- auth
  register(username, password) {
    return this._fetch('POST', '/api/auth/register', { username, password }).then((r) => this._parse(r));
  }

  login(username, password) {
    return this._fetch('POST', '/api/auth/login', { username, password }).then((r) => this._parse(r));
  }

  /** Ends the session on the server. Never refreshes: a dead session is already logged out. */
  async logout() {
    const token = this.session.access;
    if (!token) return;
    try {
      await this._fetch('POST', '/api/auth/logout', undefined, token);
    } catch { /* offline: the tokens are dropped locally anyway */ }
  }

  me() { return this.call('GET', '/api/auth/me'); }

  // ---- rooms
  rooms() { return this.call('GET', '/api/rooms'); }
  room(id) { return this.call('GET', `/api/rooms/${enc(id)}`); }
  createDirect(username) { return this.call('POST', '/api/rooms/direct', { username }); }
  createGroup(name, members) { return this.call('POST', '/api/rooms', { name, members }); }
  addMember(id, username) { return this.call('POST', `/api/rooms/${enc(id)}/members`, { username }); }
  /** A page of a room's members by username: {members: [{username, online}], next}. */
  members(id, { after, limit } = {}) {
    const q = new URLSearchParams();
    if (after) q.set('after', after);
    if (limit) q.set('limit', String(limit));
    const qs = q.toString();
    return this.call('GET', `/api/rooms/${enc(id)}/members${qs ? `?${qs}` : ''}`);
  }

  removeMember(id, username) {
    return this.call('DELETE', `/api/rooms/${enc(id)}/members/${enc(username)}`);
  }

  // ---- presence
  presence(usernames) {
    const q = new URLSearchParams({ users: usernames.join(',') });
    return this.call('GET', `/api/presence?${q}`);
  }

  // ---- history
  history(id, { before, after, limit } = {}) {
    const q = new URLSearchParams();
    if (before) q.set('before', before);
    if (after) q.set('after', after);
    if (limit) q.set('limit', String(limit));
    const qs = q.toString();
    return this.call('GET', `/api/history/${enc(id)}${qs ? `?${qs}` : ''}`);
  }
}
