// REST calls. Authenticated calls carry the access token (held in memory by js/session.js); on
// a 401 the client gets a new one from the session cookie once and retries; if that fails the
// session has ended and `onSessionEnded` shows the login screen.

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
    const token = this.session.access;
    if (!token) throw this._ended();
    let res = await this._fetch(method, path, body, token);
    if (res.status === 401) {
      // our token may be stale (another tab refreshed; the server restarted): refresh once
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
    if (!this.session.loggedIn || this.session.fresh()) return;
    let ok;
    try {
      ok = await this.refresh();
    } catch {
      return; // network trouble: go on with the old token; a 401 will tell
    }
    if (!ok) throw this._ended();
  }

  /** A new access token from the session cookie (js/session.js): true, false (the session
   *  is over), or a rejection (network). */
  refresh() { return this.session.refresh(); }

  // ---- auth
  register(username, password) {
    return this._fetch('POST', '/api/auth/register', { username, password }).then((r) => this._parse(r));
  }

  /** A browser session: the answer has the access token, the refresh token is set as a cookie. */
  async login(username, password) {
    let res;
    try {
      res = await fetch('/api/auth/login', {
        method: 'POST',
        headers: {
          Accept: 'application/json',
          'Content-Type': 'application/json',
          'X-Chat-Session': 'cookie',
        },
        body: JSON.stringify({ username, password }),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch {
      throw new ApiError(0, 'network', errorText('network'));
    }
    return this._parse(res);
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

  /** My read position in a room (never moves backwards). */
  markRead(id, messageId) {
    return this.call('POST', `/api/rooms/${enc(id)}/read`, { message_id: messageId });
  }

  setMuted(id, muted) { return this.call('PUT', `/api/rooms/${enc(id)}/mute`, { muted }); }

  /** The owner renames a group and/or sets who may add members (`owner` | `members`). */
  updateRoom(id, changes) { return this.call('PATCH', `/api/rooms/${enc(id)}`, changes); }

  removeMember(id, username) {
    return this.call('DELETE', `/api/rooms/${enc(id)}/members/${enc(username)}`);
  }

  // ---- people
  /** Users whose name starts with `prefix` (at least 3 characters): {users: [{id, username}]}. */
  users(prefix, limit = 8) {
    const q = new URLSearchParams({ prefix, limit: String(limit) });
    return this.call('GET', `/api/users?${q}`);
  }

  // ---- presence
  presence(usernames) {
    const q = new URLSearchParams({ users: usernames.join(',') });
    return this.call('GET', `/api/presence?${q}`);
  }

  // ---- history
  history(id, { before, after, around, limit } = {}) {
    const q = new URLSearchParams();
    if (before) q.set('before', before);
    if (after) q.set('after', after);
    if (around) q.set('around', around);
    if (limit) q.set('limit', String(limit));
    const qs = q.toString();
    return this.call('GET', `/api/history/${enc(id)}${qs ? `?${qs}` : ''}`);
  }

  // ---- search
  /** Messages with the words of `q`, newest first: {messages, has_more}. */
  search(q, { room, before, limit } = {}) {
    const p = new URLSearchParams({ q });
    if (room) p.set('room', room);
    if (before) p.set('before', before);
    if (limit) p.set('limit', String(limit));
    return this.call('GET', `/api/search?${p}`);
  }
}
