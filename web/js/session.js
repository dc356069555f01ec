// The login session: access + refresh tokens in sessionStorage (per tab).
// Tabs that share a session (a duplicated tab copies sessionStorage) tell each other about a
// rotated refresh token or a logout over a BroadcastChannel, so one tab's refresh does not
// strand the others with a dead refresh token.

const KEY = 'chat.session.v1';

function read() {
  try {
    const data = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    return data && data.access && data.refresh ? data : null;
  } catch {
    return null;
  }
}

export class Session extends EventTarget {
  constructor() {
    super();
    this.data = read();
    this.channel = 'BroadcastChannel' in window ? new BroadcastChannel('chat-session') : null;
    if (this.channel) this.channel.onmessage = (ev) => this._onPeer(ev.data);
  }

  get loggedIn() { return Boolean(this.data); }
  get access() { return this.data ? this.data.access : null; }
  get refresh() { return this.data ? this.data.refresh : null; }
  get username() { return this.data ? this.data.username : null; }
  get expiresAt() { return this.data ? this.data.expiresAt || 0 : 0; }

  /** Store a token pair from /login or /refresh. */
  set(pair, username) {
    this.data = {
      access: pair.access_token,
      refresh: pair.refresh_token,
      expiresAt: Date.now() + (Number(pair.expires_in) || 900) * 1000,
      username: username ?? this.username,
    };
    this._write();
  }

  setUsername(username) {
    if (!this.data || this.data.username === username) return;
    this.data.username = username;
    this._write();
  }

  /** After a successful refresh: keep the new pair and tell tabs still holding the old one. */
  rotate(oldRefresh, pair) {
    this.set(pair);
    this._post({ type: 'rotated', old: oldRefresh, data: this.data });
  }

  clear({ broadcast = false } = {}) {
    const old = this.refresh;
    this.data = null;
    sessionStorage.removeItem(KEY);
    if (broadcast && old) this._post({ type: 'logout', refresh: old });
  }

  _write() { sessionStorage.setItem(KEY, JSON.stringify(this.data)); }

  _post(msg) {
    try { this.channel?.postMessage(msg); } catch { /* channel closed */ }
  }

  _onPeer(msg) {
    if (!this.data || !msg || typeof msg !== 'object') return;
    if (msg.type === 'rotated' && msg.old === this.data.refresh && msg.data) {
      this.data = { ...msg.data };
      this._write();
    } else if (msg.type === 'logout' && msg.refresh === this.data.refresh) {
      this.dispatchEvent(new Event('ended'));
    }
  }
}
