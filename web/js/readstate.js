// Read state, as pure logic (tests/browser/test_read_state_logic.py runs it without a server):
// the unread count from the messages held, where the "New messages" line goes, when the user
// is looking at a room's newest messages, which messages raise a notification, and the
// sending of read positions (one per room at a time, the newest wins).

/** A message that counts as unread when someone else wrote it (notices do not, as on the server). */
function counts(m, isMe) {
  return !isMe(m.sender) && (!m.kind || m.kind === 'text');
}

/**
 * Messages from others after `lastRead` in `sorted` (a room's messages, oldest first), or null
 * when that cannot be told from them: `lastRead` is not held, or nothing was read and
 * `whole` (the room's whole history is held) is false.
 */
export function countUnreadAfter(sorted, lastRead, isMe, whole) {
  let start;
  if (lastRead) {
    const i = sorted.findIndex((m) => m.id === lastRead);
    if (i < 0) return null;
    start = i + 1;
  } else if (whole) {
    start = 0;
  } else {
    return null;
  }
  let n = 0;
  for (let i = start; i < sorted.length; i += 1) if (counts(sorted[i], isMe)) n += 1;
  return n;
}

/**
 * The id of the message the "New messages" line goes before when a room is opened: the first
 * message from someone else after `lastRead`. When `lastRead` is not held, the `unread`-th
 * message from others counted back from the newest (the top of what is held if fewer are
 * held). null: no line.
 */
export function dividerBefore(sorted, lastRead, unread, isMe) {
  if (lastRead) {
    const i = sorted.findIndex((m) => m.id === lastRead);
    if (i >= 0) {
      for (let j = i + 1; j < sorted.length; j += 1) if (counts(sorted[j], isMe)) return sorted[j].id;
      return null;
    }
  }
  if (!unread || !sorted.length) return null;
  let seen = 0;
  for (let j = sorted.length - 1; j >= 0; j -= 1) {
    if (counts(sorted[j], isMe)) {
      seen += 1;
      if (seen === unread) return sorted[j].id;
    }
  }
  return sorted[0].id; // more unread than held: the line is at the top of what is held
}

/**
 * Is the user reading this room's newest messages? The room is on screen with its history
 * loaded, the tab is visible and the message list is scrolled to the bottom.
 */
export function isLooking({ active, roomId, loaded, visible, atBottom }) {
  return Boolean(roomId) && active === roomId && loaded === true && visible && atBottom;
}

/**
 * Should a live message raise a desktop notification? Not for my own, not in a muted room,
 * not while notifications are off, and not when a tab of mine is showing that room (visible).
 * `lookingAt`: the rooms shown in visible tabs of this browser.
 */
export function shouldNotify(msg, { enabled, isMe, muted, lookingAt }) {
  if (!enabled || !msg || typeof msg.room !== 'string') return false;
  if (isMe(msg.sender) || muted.has(msg.room)) return false;
  if (msg.kind && msg.kind !== 'text') return false; // notices ("bob joined") are not news
  return !lookingAt.has(msg.room);
}

/** The text of a notification: "bob" or "bob in Team", and the body shortened. */
export function notificationText(msg, roomName, isDirect, max = 180) {
  const title = isDirect ? String(msg.sender) : `${msg.sender} in ${roomName}`;
  const body = String(msg.body ?? '');
  const chars = [...body];
  return { title, body: chars.length > max ? `${chars.slice(0, max - 1).join('')}…` : body };
}

/**
 * Sends read positions: the newest one per room, at most one per room every `everyMs` (a
 * fast conversation is not a frame per message). `send(room, id)` returns a promise (or a
 * value); a failure is dropped (the next read carries a newer position anyway).
 */
export class ReadSender {
  constructor(send, everyMs = 1_000) {
    this.send = send;
    this.everyMs = everyMs;
    this.last = new Map(); // room -> ms of the last send
    this.waiting = new Map(); // room -> id to send when the pause is over
    this.timers = new Map();
    this.sent = 0; // for tests and support
  }

  mark(room, id) {
    this.waiting.set(room, id);
    if (this.timers.has(room)) return;
    const wait = (this.last.get(room) || -Infinity) + this.everyMs - Date.now();
    if (wait <= 0) this._flush(room);
    else this.timers.set(room, setTimeout(() => this._flush(room), wait));
  }

  _flush(room) {
    this.timers.delete(room);
    const id = this.waiting.get(room);
    this.waiting.delete(room);
    if (!id) return;
    this.last.set(room, Date.now());
    this.sent += 1;
    try {
      Promise.resolve(this.send(room, id)).catch(() => { /* a newer read follows */ });
    } catch { /* ditto */ }
  }

  reset() {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.waiting.clear();
    this.last.clear();
  }
}
