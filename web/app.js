// The chat client: wires the session, the REST API, the WebSocket, the store and the UI.

import { Api, ApiError } from './js/api.js';
import { closeText, errorText } from './js/errors.js';
import { Session } from './js/session.js';
import { ChatSocket, gatewayUrl } from './js/socket.js';
import { bindControls, mobile } from './js/controls.js';
import { MemberPages, PresenceSub, SMALL_ROOM_MAX, hasMemberList, memberCount } from './js/members.js';
import { Notifier } from './js/notify.js';
import { Outbox } from './js/outbox.js';
import { ReadSender, isLooking } from './js/readstate.js';
import { Store, isNotice } from './js/store.js';
import { Sync } from './js/sync.js';
import { UI } from './js/ui.js';

const TYPING_SHOW_MS = 4_000;
const ACTIVE_KEY = 'chat.active.v1';
const READ_RETRY_MS = 2_000;
// error frames without a client_msg_id that answer a `read` or `typing` frame: not shown
const QUIET_ERRORS = new Set(['message_not_found', 'unavailable', 'room_not_found', 'not_a_member']);

const session = new Session();
const store = new Store();
const ui = new UI(store);
const api = new Api(session, { onSessionEnded: (why) => endSession(why) });
const sync = new Sync({
  api,
  store,
  onChange: (roomId) => {
    if (roomId === store.activeRoomId) ui.invalidate('messages');
    ui.invalidate('rooms');
  },
  onError: (e) => showError(e),
  onNew: (roomId, added) => noteFetched(roomId, added),
});

let socket = null;
const outbox = new Outbox(store, ui, () => socket);
let refreshedSinceReady = false;
let connects = 0; // `ready` frames seen by this page
const fetchingRooms = new Set();
let resyncing = false; // a `resync` came: membership frames may have been missed until `synced`
let inChat = false; // the chat view is up (signed in)
let resumeTimer = null;

// read positions go out over the socket, or by REST while it is down (js/readstate.js)
const reads = new ReadSender((roomId, messageId) => {
  if (socket && socket.send({ type: 'read', room: roomId, message_id: messageId })) return null;
  return api.markRead(roomId, messageId);
});

const notifier = new Notifier({
  view: () => ({ room: store.activeRoomId, visible: document.visibilityState === 'visible' }),
  onOpen: (roomId) => openRoom(roomId),
  onChange: () => ui.setNotifyState(notifier.state),
});

// presence beyond contacts: the visible rows of a big group's member list (js/members.js)
const presenceSub = new PresenceSub(
  (users) => Boolean(socket && socket.send({ type: 'presence_sub', users })),
  { onSent: (users) => { ui.el['member-list'].dataset.presenceSub = String(users.length); } },
);
ui.onVisibleMembers = (users) => presenceSub.want(users);
ui.pagesFor = (room) => memberPages(room);

// ---------------------------------------------------------------- session lifecycle

function enterChat() {
  if (inChat) return;
  inChat = true;
  clearTimeout(resumeTimer);
  store.reset();
  presenceSub.reset();
  reads.reset();
  delete ui.el['member-list'].dataset.presenceSub;
  store.me = { id: null, username: session.username || '' };
  store.loadPending();
  store.loadChanges();
  previewsAsked.clear();
  ui.setMe(store.me.username);
  ui.showChat();
  ui.setNotifyState(notifier.state);
  notifier.start();
  refreshedSinceReady = false;
  socket = new ChatSocket({
    url: gatewayUrl(),
    getToken,
    onFrame,
    onState: (state) => ui.setConnState(state),
    onClosed,
    onAuthRejected,
  });
  socket.start();
  api.rooms().then((data) => {
    // the socket's `ready` is authoritative; this only fills the sidebar sooner
    if (!socket || socket.everReady || !data || !Array.isArray(data.rooms)) return;
    store.setRooms(data.rooms);
    restoreActiveRoom();
    ui.invalidate('rooms', 'header', 'online');
  }).catch(showError);
}

/** The session is over (here, in another tab, or on the server): API calls end it this way. */
function endSession(why) {
  if (session.loggedIn) session.end({ broadcast: true, why }); // its `ended` event leaves the chat
  else leaveChat(why);
}

/** Back to the login screen. `why`: logout | peer-logout | expired | switched. */
function leaveChat(why) {
  const was = inChat;
  inChat = false;
  if (socket) socket.stop();
  socket = null;
  sync.reset();
  presenceSub.reset();
  reads.reset();
  notifier.stop();
  store.clearSaved();
  sessionStorage.removeItem(ACTIVE_KEY);
  store.reset();
  if (why === 'switched') return; // another user signed in in another tab: enterChat follows
  ui.showLogin();
  ui.setConnState('offline');
  if (was && (why === 'expired' || why === 'peer-logout')) {
    ui.showBanner('Your session has ended. Please log in again.', 'info', 0);
  } else if (was) {
    ui.hideBanner();
  }
}

session.addEventListener('ended', (ev) => leaveChat(ev.detail.why));
session.addEventListener('token', (ev) => {
  // a new access token: from a login or refresh here, or from another tab of this browser
  if (ev.detail.switched && inChat) leaveChat('switched');
  if (!inChat) {
    ui.hideBanner();
    enterChat();
  }
});

async function getToken() {
  try {
    await api.ensureFresh();
  } catch {
    return null;
  }
  return session.access;
}

async function onAuthRejected() {
  // close 4001: the token is bad, expired or revoked. Refresh once; if the new token is
  // refused too, or the refresh token is dead, the session is over.
  if (refreshedSinceReady) {
    endSession('expired');
    return 'logout';
  }
  refreshedSinceReady = true;
  try {
    if (await api.refresh()) return 'retry';
  } catch {
    return 'backoff'; // could not reach the auth service: try again later
  }
  endSession('expired'); // the session is gone (logged out elsewhere, expired): every tab
  return 'logout';
}

function onClosed(code) {
  sync.onBreak();
  ui.el['conn-state'].dataset.closeCode = String(code); // for tests and support
  for (const s of store.state.values()) s.typing.clear();
  store.presenceLost(); // nobody is known to be online while we are not connected
  ui.invalidate('typing', 'rooms', 'header', 'members', 'online');
  const text = closeText(code);
  if (text && code !== 4001 && code !== 1012) ui.showBanner(text, 'info');
}

// ---------------------------------------------------------------- frames

function onFrame(f) {
  switch (f.type) {
    case 'ready': return onReady(f);
    case 'message': return onMessage(f.message);
    case 'ack': return onAck(f);
    case 'error': return onErrorFrame(f);
    case 'typing': return onTyping(f);
    case 'presence': return onPresence(f);
    case 'room': return onRoomEvent(f);
    case 'read': return onReadFrame(f);
    case 'muted': return onMutedFrame(f);
    case 'message_changed': return onChanged(f.message);
    case 'synced':
      sync.onSynced();
      if (resyncing) invalidateMemberPages();
      resyncing = false;
      return outbox.resend({ onlyRetryable: true });
    case 'resync':
      resyncing = true;
      return sync.onResync();
    default: return undefined; // pong and anything newer than this client
  }
}

function onReady(f) {
  if (f.user && f.user.username) {
    store.me = { id: f.user.id || null, username: f.user.username };
    session.setUsername(f.user.username);
    ui.setMe(f.user.username);
  }
  refreshedSinceReady = false;
  connects += 1;
  const state = ui.el['conn-state'];
  state.dataset.gateway = f.gateway ? String(f.gateway) : ''; // for tests and support
  state.dataset.connects = String(connects);
  store.setRooms(Array.isArray(f.rooms) ? f.rooms : []);
  store.online = new Set((f.online || []).map((u) => String(u).toLowerCase()));
  store.presenceKnown = true;
  resyncing = false;
  invalidateMemberPages(); // member frames sent while we were away are lost: fetch again
  presenceSub.onReady(); // a new connection has no presence_sub yet
  sync.onReady();
  outbox.resend();
  restoreActiveRoom();
  const active = store.activeRoomId;
  if (active && !store.rs(active).loaded) sync.loadFirst(active);
  fetchPreviews();
  ui.invalidate('rooms', 'header', 'messages', 'composer', 'online');
}

// ---------------------------------------------------------------- previews

const PREVIEW_ROOMS = 60; // the conversation list's first rooms get a preview fetched
const PREVIEW_PARALLEL = 3;
const previewsAsked = new Map(); // room id -> unread count when its preview was fetched

/**
 * The conversation list shows each room's newest message. Rooms whose messages we hold show
 * theirs; for the others (not opened on this page) the newest message is read once
 * (`GET /api/history/{id}?limit=1`), a few at a time, for the first rooms of the list, and
 * again after a reconnect for a room whose unread count has changed meanwhile.
 */
function fetchPreviews() {
  const todo = store.orderedRooms().slice(0, PREVIEW_ROOMS).filter((room) => {
    const s = store.state.get(room.id);
    if (s && s.latest()) return false;
    const unread = s ? s.unread : 0;
    if (previewsAsked.has(room.id) && previewsAsked.get(room.id) === unread) return false;
    previewsAsked.set(room.id, unread);
    return true;
  });
  const next = () => {
    const room = todo.shift();
    if (!room || !inChat) return undefined;
    return api.history(room.id, { limit: 1 })
      .then((page) => {
        const m = page && Array.isArray(page.messages) ? page.messages[page.messages.length - 1] : null;
        if (m && store.rooms.has(room.id)) {
          store.setPreview(room.id, m);
          ui.invalidate('rooms');
        }
      })
      .catch(() => { /* a preview is a nicety */ })
      .then(next);
  };
  for (let i = 0; i < PREVIEW_PARALLEL; i += 1) next();
}

function onMessage(msg) {
  if (!msg || typeof msg.room !== 'string') return;
  if (!store.rooms.has(msg.room)) learnRoom(msg.room);
  const s = store.rs(msg.room);
  const added = store.mergeLive(msg.room, [msg]);
  if (msg.sender) s.typing.delete(msg.sender);
  if (!added.length) return;
  store.touch(msg.room);
  // a notice ("alice added bob") is not unread and raises no notification
  const fromOther = !store.isMe(msg.sender) && !isNotice(msg);
  if (fromOther && !looking(msg.room)) {
    // unread: counted from what we hold when that is exact, else one more on the server's count
    if (!store.recount(msg.room)) s.unread += 1;
    // the user is away from this open room (tab hidden, scrolled up): mark where they left off
    if (msg.room === store.activeRoomId && s.divider === null) {
      s.divider = added[0].id;
      s.dividerShown = true; // no jump: the user scrolls to it
    }
    const room = store.rooms.get(msg.room);
    notifier.consider(added[0], {
      roomName: store.roomName(room),
      isDirect: Boolean(room && room.kind === 'direct'),
      isMe: (u) => store.isMe(u),
      muted: store.muted,
    });
  }
  ui.invalidate('rooms');
  if (msg.room === store.activeRoomId) ui.invalidate('messages', 'typing'); // then maybeMarkRead
}

let readRetry = null;
function retryRead() {
  if (readRetry) return;
  readRetry = setTimeout(() => {
    readRetry = null;
    const roomId = store.activeRoomId;
    const s = roomId && store.state.get(roomId);
    if (s && s.lastRead && inChat) reads.mark(roomId, s.lastRead);
  }, READ_RETRY_MS);
}

/** My read position moved on another connection (another tab or device). */
function onReadFrame(f) {
  if (typeof f.room !== 'string' || !store.rooms.has(f.room)) return;
  if (store.setRead(f.room, f.message_id)) ui.invalidate('rooms', 'jump');
}

/** A room was muted or unmuted (here, or on another connection). */
function onMutedFrame(f) {
  if (typeof f.room !== 'string' || typeof f.muted !== 'boolean') return;
  store.setMuted(f.room, f.muted);
  ui.invalidate('rooms', 'header');
}

/** An edit or a delete (anyone's, from any connection): the message as it is now. */
function onChanged(msg) {
  if (!msg || typeof msg.room !== 'string' || !store.rooms.has(msg.room)) return;
  if (store.applyChanged(msg)) {
    if (msg.deleted && ui.editing && ui.editing.id === msg.id) ui.editing = null;
    if (msg.room === store.activeRoomId) ui.invalidate('messages');
    ui.invalidate('rooms');
  }
}

function onAck(f) {
  const change = f.client_msg_id && store.changes.get(f.client_msg_id);
  if (change) { // my edit or delete is stored: the message as it is now
    store.changes.delete(f.client_msg_id);
    store.saveChanges();
    if (f.message) store.applyChanged(f.message);
    if (change.room === store.activeRoomId) ui.invalidate('messages');
    ui.invalidate('rooms');
    return;
  }
  const added = store.ack(f.client_msg_id, f.message);
  const roomId = f.message && f.message.room;
  if (roomId) {
    if (added.length) store.touch(roomId);
    if (roomId === store.activeRoomId) ui.invalidate('messages');
    ui.invalidate('rooms');
  }
}

// a refused edit or delete that retrying cannot fix: dropped, with a word why
const FINAL_CHANGE_ERRORS = new Set(['forbidden', 'message_not_found', 'not_a_member', 'room_not_found', 'invalid_frame']);

function onErrorFrame(f) {
  const change = f.client_msg_id && store.changes.get(f.client_msg_id);
  if (change) {
    const what = change.kind === 'edit' ? 'The message was not edited' : 'The message was not deleted';
    const text = errorText(f.code, f.message, {
      forbidden: change.kind === 'edit' ? 'You can only edit your own messages.'
        : 'Only the sender or the group’s owner can delete a message.',
    });
    if (FINAL_CHANGE_ERRORS.has(f.code)) {
      store.changes.delete(f.client_msg_id);
      store.saveChanges();
      ui.showBanner(`${what}: ${text}`);
    } else {
      change.state = 'failed';
      change.code = f.code;
      change.error = text;
      store.saveChanges();
    }
    if (change.room === store.activeRoomId) ui.invalidate('messages');
    return;
  }
  const text = errorText(f.code, f.message);
  if (f.client_msg_id && store.pending.has(f.client_msg_id)) {
    const p = store.fail(f.client_msg_id, f.code, text);
    if (p && p.room === store.activeRoomId) ui.invalidate('messages');
    else ui.showBanner(`A message was not sent: ${text}`);
    return;
  }
  if (f.client_msg_id) return; // already confirmed: a late duplicate answer
  if (QUIET_ERRORS.has(f.code)) {
    // the answer to a `read` (a message history has not stored yet, a write that failed) or a
    // typing frame for a room just left: nothing for a person to do; the read goes again
    retryRead();
    return;
  }
  ui.showBanner(text);
}

function onTyping(f) {
  if (!f.room || !f.username || store.isMe(f.username) || !store.rooms.has(f.room)) return;
  store.rs(f.room).typing.set(f.username, Date.now() + TYPING_SHOW_MS);
  if (f.room === store.activeRoomId) ui.invalidate('typing');
}

/** `{username, online}` (one change) or `{changes: [{username, online}]}` (several). */
function onPresence(f) {
  if (store.applyPresenceFrame(f)) ui.invalidate('rooms', 'header');
}

function onRoomEvent(f) {
  if (f.event === 'member_joined' || f.event === 'member_left') return onMemberEvent(f);
  const room = f.room;
  if (!room || typeof room !== 'object' || !room.id) return;
  // a room object without a member list (a big group) cannot tell that we left: `left` does
  if (f.event === 'left' || (f.event === 'updated' && hasMemberList(room) && !store.isMember(room))) {
    const wasActive = store.activeRoomId === room.id;
    const name = store.roomName(store.rooms.get(room.id) || room);
    if (dropRoom(room.id) && wasActive) {
      ui.showBanner(`You are no longer a member of “${name}”.`, 'info');
    }
  } else {
    const before = store.rooms.get(room.id);
    store.upsertRoom(room, f.event === 'joined');
    if (f.event === 'joined') settleNewRoom(room.id);
    const known = new Set((before && before.members) || []);
    if (hasMemberList(room)) refreshPresence(room.members.filter((m) => !known.has(m)));
  }
  ui.invalidate('rooms', 'header', 'messages', 'composer');
}

/** Someone else joined or left a room we are in: `room` is its id here. */
function onMemberEvent(f) {
  const roomId = f.room;
  if (typeof roomId !== 'string' || typeof f.username !== 'string' || !f.username) return;
  const before = store.rooms.get(roomId);
  if (!before) return; // not (yet) ours: its `joined` frame brings the whole room
  const joined = f.event === 'member_joined';
  if (!joined && store.isMe(f.username)) { // another tab of ours was removed? `left` says it too
    dropRoom(roomId);
    return;
  }
  const count = typeof f.member_count === 'number' ? f.member_count : undefined;
  const after = store.applyMemberEvent(roomId, f.username, joined, count);
  if (hasMemberList(before) && !hasMemberList(after) && memberCount(after) <= SMALL_ROOM_MAX) {
    refetchRoom(roomId); // the list and the count disagree: a frame was missed
  }
  // a newcomer to a small room is a new contact: the gateway sends their presence if they are
  // online; if they are not, nothing is said, and they are offline for us already
  if (roomId === store.activeRoomId) ui.invalidate('header');
  ui.invalidate('rooms');
}

/** Read a room object again (its member list went out of step). */
function refetchRoom(roomId) {
  api.room(roomId)
    .then((room) => {
      if (room && room.id && store.rooms.has(room.id)) {
        store.upsertRoom(room);
        if (hasMemberList(room)) refreshPresence(room.members);
        ui.invalidate('rooms', 'header');
      }
    })
    .catch(() => { /* a later frame or `ready` brings it */ });
}

/** The cached member pages of a big group (made on first view). */
function memberPages(room) {
  let pages = store.memberPages.get(room.id);
  if (!pages) {
    const roomId = room.id;
    pages = new MemberPages(async (after, limit) => {
      const tick = store.presenceTick;
      const data = await api.members(roomId, { after, limit });
      store.noteFetchedPresence(data && data.members, tick);
      return data;
    }, room.member_count, () => {
      if (store.activeRoomId === roomId) ui.invalidate('members');
    });
    store.memberPages.set(roomId, pages);
  }
  return pages;
}

function invalidateMemberPages() {
  for (const [roomId, pages] of store.memberPages) {
    if (roomId === store.activeRoomId) pages.invalidate();
    else store.dropMemberPages(roomId); // fetched again when shown
  }
  ui.invalidate('members');
}

/** Ask who of these users is online (a new room's members were not our contacts at `ready`). */
function refreshPresence(usernames) {
  const names = [...new Set(usernames.map((u) => String(u).toLowerCase()))]
    .filter((u) => !store.isMe(u));
  if (!names.length) return;
  const tick = store.presenceTick;
  api.presence(names)
    .then((data) => {
      const on = new Set(((data && data.online) || []).map((u) => String(u).toLowerCase()));
      // unless a presence frame about them came meanwhile (it is newer)
      store.noteFetchedPresence(names.map((u) => ({ username: u, online: on.has(u) })), tick);
      ui.invalidate('rooms', 'header');
    })
    .catch(() => { /* presence is a nicety */ });
}

/** A message for a room we do not know yet (its `room` event may still be on its way). */
function learnRoom(roomId) {
  if (fetchingRooms.has(roomId)) return;
  fetchingRooms.add(roomId);
  api.room(roomId)
    .then((room) => {
      if (room && room.id) {
        store.upsertRoom(room, true);
        ui.invalidate('rooms');
      }
    })
    .catch(() => { /* not a member: ignore */ })
    .finally(() => fetchingRooms.delete(roomId));
}

/**
 * Messages a history fetch brought (a catch-up after a reconnect, the first page, older
 * pages). The server's unread count covers what was stored before `ready`; where we hold the
 * last read message the count is made again from what we hold, exactly.
 */
function noteFetched(roomId, added) {
  if (!added.length) return;
  store.recount(roomId);
  store.touch(roomId);
  ui.invalidate('rooms');
}

/** Is the user reading this room's newest messages right now (js/readstate.js)? */
function looking(roomId) {
  const s = store.state.get(roomId);
  return isLooking({
    active: store.activeRoomId,
    roomId,
    loaded: s && s.loaded,
    visible: document.visibilityState === 'visible',
    atBottom: ui.atBottom(),
  });
}

/** After every render of the messages, a scroll, the tab coming back: read what is shown. */
function maybeMarkRead() {
  const roomId = store.activeRoomId;
  if (!roomId || !inChat || !looking(roomId)) return;
  const s = store.rs(roomId);
  if (s.hasNewer) return; // a window in the past: its end is not the newest message
  const newest = s.newest();
  const changed = s.unread !== 0;
  s.unread = 0;
  if (newest && s.lastRead !== newest.id) {
    s.lastRead = newest.id;
    reads.mark(roomId, newest.id);
  }
  if (changed) ui.invalidate('rooms', 'jump');
}

// ---------------------------------------------------------------- rooms

function openRoom(roomId, { load = true } = {}) {
  if (!store.rooms.has(roomId)) return;
  const before = store.activeRoomId;
  if (before && before !== roomId && store.state.get(before)) {
    store.rs(before).divider = undefined; // the line is placed again at the next visit
  }
  store.activeRoomId = roomId;
  sessionStorage.setItem(ACTIVE_KEY, roomId);
  const s = store.rs(roomId);
  // the "New messages" line: placed once the history is here (ui.js), from the read state now
  if (before !== roomId) {
    s.divider = undefined;
    ui.menuFor = null;
    ui.confirmDelete = null;
    ui.editing = null;
    ui.highlight = null;
  }
  notifier.viewChanged();
  if (!s.loaded && load) sync.loadFirst(roomId);
  if (mobile.matches) ui.setSidebar(false);
  ui.scrollToBottom();
  ui.invalidate('rooms', 'header', 'messages', 'typing', 'composer');
  // after the render pass (queued first) has enabled the composer
  if (!mobile.matches) queueMicrotask(() => ui.el['composer-input'].focus());
}

/**
 * Open a conversation at one message (a search result): the page around it, the message in
 * the middle of the view and highlighted.
 */
async function openAt(roomId, messageId) {
  if (!store.rooms.has(roomId)) {
    ui.showBanner('You are no longer in that conversation.', 'info');
    return;
  }
  openRoom(roomId, { load: false }); // the page around the message, not the newest
  const s = store.rs(roomId);
  s.divider = null; // no "New messages" line: the user came for one message
  s.dividerShown = true;
  ui.highlight = messageId;
  ui.scrollTo = messageId;
  ui.invalidate('messages', 'jump');
  try {
    const found = await sync.loadAround(roomId, messageId);
    if (!found && store.activeRoomId === roomId) {
      ui.showBanner('That message is no longer in the conversation (deleted or out of reach).', 'info');
    }
  } catch (e) {
    showError(e);
  }
  if (store.activeRoomId === roomId) {
    ui.scrollTo = messageId;
    ui.invalidate('messages', 'jump', 'rooms');
  }
}

/** Back to the newest messages from a window in the past. */
function jumpToPresent(roomId) {
  ui.highlight = null;
  ui.scrollToBottom();
  sync.loadPresent(roomId).catch(showError);
}

// A room that became mine on this connection: what was published with its creation or my
// joining (the `created` / `joined` notice) can reach history a moment after the room's first
// page was read, and the gateway may not have been bound to the room yet to relay it live
// (seen in the scaled mode). So its history is read again after these delays (from the
// cursor: nothing twice).
const SETTLE_MS = [1_500, 5_000];
function settleNewRoom(roomId) {
  for (const ms of SETTLE_MS) {
    setTimeout(() => {
      const s = store.state.get(roomId);
      if (inChat && s && s.loaded === true && !s.hasNewer && store.rooms.has(roomId)) sync.catchUp(roomId);
    }, ms);
  }
}

/** Forget a room we are no longer in. True if we had it. */
function dropRoom(roomId) {
  const had = store.rooms.has(roomId);
  if (store.activeRoomId === roomId) sessionStorage.removeItem(ACTIVE_KEY);
  store.removeRoom(roomId);
  ui.invalidate('rooms', 'header', 'messages', 'typing', 'composer');
  return had;
}

function restoreActiveRoom() {
  if (store.activeRoomId) return;
  const saved = sessionStorage.getItem(ACTIVE_KEY);
  if (saved && store.rooms.has(saved)) openRoom(saved);
}

function showError(e, extra) {
  if (e instanceof ApiError) {
    if (e.code === 'session_expired') return; // the login screen says it
    ui.showBanner(e.text(extra));
  } else {
    console.error(e); // eslint-disable-line no-console
    ui.showBanner('Something went wrong. Please try again.');
  }
}

function maybeLoadOlder() {
  const roomId = store.activeRoomId;
  if (!roomId) return;
  const s = store.state.get(roomId);
  if (s && s.loaded === true && s.hasOlder && !s.loadingOlder) sync.loadOlder(roomId);
}

// after each render of the message list: too short to scroll, or still at the top? fetch more
ui.afterMessages = () => {
  if (ui.needsMoreToFill() || ui.nearTop()) maybeLoadOlder();
  maybeLoadNewer();
  maybeMarkRead();
};

/** A window in the past: the next newer page when the user nears its end. */
function maybeLoadNewer() {
  const roomId = store.activeRoomId;
  const s = roomId && store.state.get(roomId);
  if (s && s.loaded === true && s.hasNewer && !s.loadingNewer && (ui.nearBottom() || ui.needsMoreToFill())) {
    sync.loadNewer(roomId);
  }
}

// ---------------------------------------------------------------- start

bindControls({
  store, ui, api, session, outbox, notifier, openRoom, dropRoom, refreshPresence, showError,
  maybeLoadOlder, maybeLoadNewer, maybeMarkRead, openAt, jumpToPresent, refetchRoom, settleNewRoom,
  socket: () => socket,
});

document.addEventListener('visibilitychange', () => {
  notifier.viewChanged();
  maybeMarkRead();
});

/** On load: resume the browser's session from its cookie (a new tab, a restarted browser). */
async function resume(attempt = 0) {
  const result = await session.resume();
  if (result === 'ok' || inChat) return; // the session's `token` event entered the chat
  if (attempt === 0) {
    ui.showLogin();
    ui.setConnState('offline');
  }
  if (result === 'offline') {
    // the server cannot be reached: keep trying quietly, the login form stays usable
    ui.showBanner('Cannot reach the server. Retrying…', 'info', 0);
    const delay = Math.min(30_000, 2_000 * 2 ** attempt);
    resumeTimer = setTimeout(() => { if (!inChat) resume(attempt + 1); }, delay);
  } else if (attempt > 0) {
    ui.hideBanner(); // reachable again, and there is no session: the login form it is
  }
}

ui.setNotifyState(notifier.state);
resume();
