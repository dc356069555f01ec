// The WebSocket to a gateway: authenticate with the first frame, report the connection state,
// reconnect with exponential backoff and jitter (to whichever gateway the load balancer picks),
// and notice a dead connection with application-level pings.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
const AUTH_TIMEOUT_MS = 15_000; // no `ready` in time: drop and try again
const PING_EVERY_MS = 15_000;
const DEAD_AFTER_MS = 40_000; // nothing heard for this long: the connection is dead

export function gatewayUrl(loc = window.location) {
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws`;
}

export class ChatSocket {
  /**
   * @param {object} o
   * @param {string} o.url
   * @param {() => Promise<string|null>} o.getToken  access token for the auth frame
   * @param {(frame: object) => void} o.onFrame      every frame, `ready` included
   * @param {(state: string) => void} o.onState      connecting | online | reconnecting | offline
   * @param {(code: number, reason: string, wasReady: boolean) => void} o.onClosed
   * @param {() => Promise<'retry'|'backoff'|'logout'>} o.onAuthRejected  after close 4001
   */
  constructor(o) {
    Object.assign(this, o);
    this.state = 'offline';
    this.running = false;
    this.ws = null;
    this.gen = 0; // connection generation: callbacks of an abandoned socket are ignored
    this.attempt = 0;
    this.ready = false;
    this.everReady = false;
    this.timer = null;
    this.authTimer = null;
    this.pingTimer = null;
    this.lastRx = 0;
    this.lastClose = null;
    this._onOnline = () => {
      if (this.running && !this.ws && this.timer) this._schedule(0);
    };
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    window.addEventListener('online', this._onOnline);
    this._connect();
  }

  stop() {
    this.running = false;
    window.removeEventListener('online', this._onOnline);
    clearTimeout(this.timer);
    this.timer = null;
    this.gen += 1;
    const ws = this.ws;
    this._cleanup();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000, 'bye'); } catch { /* already closed */ }
    }
    this._setState('offline');
  }

  /** Send a frame if the connection is authenticated; false otherwise (caller keeps it). */
  send(frame) {
    if (!this.ready || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    try {
      this.ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /** Give up on the current connection at once (e.g. it looks dead) and reconnect. */
  reconnectNow() {
    if (!this.running) return;
    if (this.ws) this._drop(1006, 'client reconnect');
    else this._schedule(0);
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.onState?.(state);
  }

  async _connect() {
    clearTimeout(this.timer);
    this.timer = null;
    const gen = ++this.gen;
    this._setState(this.everReady || this.attempt > 0 ? 'reconnecting' : 'connecting');
    let token = null;
    try { token = await this.getToken(); } catch { token = null; }
    if (gen !== this.gen || !this.running) return;
    if (!token) {
      this._schedule(this._backoff());
      return;
    }
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this._schedule(this._backoff());
      return;
    }
    this.ws = ws;
    this.lastRx = Date.now();
    this.authTimer = setTimeout(() => {
      if (gen === this.gen && !this.ready) this._drop(4008, 'no ready in time');
    }, AUTH_TIMEOUT_MS);
    ws.onopen = () => {
      if (gen !== this.gen) return;
      ws.send(JSON.stringify({ type: 'auth', token }));
    };
    ws.onmessage = (ev) => {
      if (gen !== this.gen) return;
      this.lastRx = Date.now();
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      if (!frame || typeof frame !== 'object') return;
      if (frame.type === 'ready') {
        this.ready = true;
        this.everReady = true;
        this.attempt = 0;
        clearTimeout(this.authTimer);
        this._startPing(gen);
        this._setState('online');
      }
      this.onFrame(frame);
    };
    ws.onerror = () => { /* a close event follows */ };
    ws.onclose = (ev) => {
      if (gen !== this.gen) return;
      this._closed(ev.code, ev.reason || '');
    };
  }

  _startPing(gen) {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (gen !== this.gen) return;
      const quiet = Date.now() - this.lastRx;
      if (quiet > DEAD_AFTER_MS) this._drop(1006, 'no answer to pings');
      else if (quiet >= PING_EVERY_MS - 1000) this.send({ type: 'ping' });
    }, PING_EVERY_MS);
  }

  _cleanup() {
    clearTimeout(this.authTimer);
    clearInterval(this.pingTimer);
    this.authTimer = null;
    this.pingTimer = null;
    this.ready = false;
    this.ws = null;
  }

  _drop(code, reason) {
    const ws = this.ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(); } catch { /* ignore */ }
    }
    this._closed(code, reason);
  }

  _closed(code, reason) {
    const wasReady = this.ready;
    this._cleanup();
    this.gen += 1;
    this.lastClose = code;
    this.onClosed?.(code, reason, wasReady);
    if (!this.running) {
      this._setState('offline');
      return;
    }
    this._setState('reconnecting');
    if (code === 4001) {
      this._afterAuthRejected();
    } else if (code === 1012) {
      this._schedule(Math.random() * 300); // server restart: reconnect at once (spread a little)
    } else if (code === 4029) {
      this._schedule(Math.max(5_000, this._backoff()));
    } else {
      this._schedule(this._backoff());
    }
  }

  async _afterAuthRejected() {
    const gen = this.gen;
    let verdict = 'backoff';
    try { verdict = await this.onAuthRejected(); } catch { verdict = 'backoff'; }
    if (!this.running || gen !== this.gen) return;
    if (verdict === 'logout') this.stop();
    else this._schedule(verdict === 'retry' ? 0 : this._backoff());
  }

  _backoff() {
    const cap = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 20);
    return cap / 2 + Math.random() * (cap / 2); // "equal jitter"
  }

  _schedule(delay) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._connect(), delay);
  }
}
