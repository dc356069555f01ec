// Own messages until their ack: the first send, the resend after a reconnect (same
// client_msg_id, with "retry": true), paced so that a backlog stays under the gateway's rate
// limit, and the automatic resend of messages the gateway could not store right then.

const RESEND_BATCH = 10; // pending messages resent per burst after a reconnect
const RESEND_PAUSE_MS = 600; // ... 10 per 0.6 s stays under the gateway's 20/s

/** Codes after which a message goes out again by itself once the gateway is back in sync. */
const RETRYABLE = new Set(['unavailable']);

export class Outbox {
  /** @param {() => import('./socket.js').ChatSocket|null} getSocket */
  constructor(store, ui, getSocket) {
    this.store = store;
    this.ui = ui;
    this.getSocket = getSocket;
  }

  /** Send one pending message if the socket is ready; otherwise it waits for `ready`. */
  transmit(p) {
    const socket = this.getSocket();
    if (!socket) return false;
    const frame = { type: 'send', room: p.room, body: p.body, client_msg_id: p.cmid };
    if (p.transmitted) frame.retry = true; // same client_msg_id: the gateway answers the same ack
    if (!socket.send(frame)) return false;
    p.transmitted = true;
    this.store.savePending();
    return true;
  }

  /** Send one edit or delete of mine (the same way: acked, retried with its client_msg_id). */
  transmitChange(c) {
    const socket = this.getSocket();
    if (!socket) return false;
    const frame = { type: c.kind, room: c.room, message_id: c.messageId, client_msg_id: c.cmid };
    if (c.kind === 'edit') frame.body = c.body;
    if (c.transmitted) frame.retry = true;
    if (!socket.send(frame)) return false;
    c.transmitted = true;
    this.store.saveChanges();
    return true;
  }

  /**
   * After `ready`: send every own message still waiting for its ack (and those refused only
   * because the gateway could not store them right then), a few at a time. After `synced`:
   * only the latter.
   */
  resend({ onlyRetryable = false } = {}) {
    const { store } = this;
    const all = [...store.pending.values(), ...store.changes.values()];
    for (const p of all) {
      if (p.state === 'failed' && RETRYABLE.has(p.code)) {
        p.state = 'sending';
        p.code = null;
        p.error = null;
        p.retryNow = true;
      }
    }
    const list = all
      .filter((p) => p.state === 'sending' && (!onlyRetryable || p.retryNow))
      .sort((a, b) => a.createdMs - b.createdMs);
    for (const p of list) delete p.retryNow;
    if (list.length) this.ui.invalidate('messages');
    const socket = this.getSocket();
    const gen = socket && socket.gen;
    let i = 0;
    const burst = () => {
      const now = this.getSocket();
      if (!now || now.gen !== gen || !now.ready) return;
      let n = 0;
      while (i < list.length && n < RESEND_BATCH) {
        const p = list[i++];
        if (p.state !== 'sending') continue;
        if (store.pending.get(p.cmid) === p) this.transmit(p);
        else if (store.changes.get(p.cmid) === p) this.transmitChange(p);
        else continue;
        n += 1;
      }
      if (i < list.length) setTimeout(burst, RESEND_PAUSE_MS);
    };
    burst();
  }

  /** The user pressed Retry on a failed message, edit or delete: same client_msg_id. */
  retry(cmid) {
    const c = this.store.changes.get(cmid);
    if (c) {
      c.state = 'sending';
      c.error = null;
      c.code = null;
      this.store.saveChanges();
      this.transmitChange(c);
      return;
    }
    const p = this.store.pending.get(cmid);
    if (!p) return;
    p.state = 'sending';
    p.error = null;
    p.code = null;
    this.store.savePending();
    this.transmit(p);
  }

  discard(cmid) {
    if (this.store.changes.delete(cmid)) this.store.saveChanges();
    this.store.pending.delete(cmid);
    this.store.savePending();
  }
}
