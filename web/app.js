// The chat client: wires the session, the REST API, the WebSocket, the store and the UI.

import { Api, ApiError } from './js/api.js';
import { closeText, errorText } from './js/errors.js';
import { Session } from './js/session.js';
import { ChatSocket, gatewayUrl } from './js/socket.js';
import { bindControls, mobile } from './js/controls.js';
import { MemberPages, PresenceSub, SMALL_ROOM_MAX, hasMemberList, memberCount } from './js/members.js';
import { Outbox } from './js/outbox.js';
import { Store } from './js/store.js';
import { Sync } from './js/sync.js';
import { UI } from './js/ui.js';

const TYPING_SHOW_MS = 4_000;
const ACTIVE_KEY = 'chat.active.v1';

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
  onNew: (roomId, added) => noteNew(roomId, added),
});

let socket = null;
const outbox = new Outbox(store, ui, () => socket);
let refreshedSinceReady = false;
let connects = 0; // `ready` frames seen by this page
const fetchingRooms = new Set();
let resyncing = false; // a `resync` came: membership frames may have been missed until `synced`

// presence beyond contacts: the visible rows of a big group's member list (js/members.js)
const presenceSub = new PresenceSub(
  (users) => Boolean(socket && socket.send({ type: 'presence_sub', users })),
  { onSent: (users) => { ui.el['member-list'].dataset.presenceSub = String(users.length); } },
);
ui.onVisibleMembers = (users) => presenceSub.want(users);
ui.pagesFor = (room) => memberPages(room);

// ---------------------------------------------------------------- session lifecycle

function enterChat() {
  store.reset();
  presenceSub.reset();
  delete ui.el['member-list'].dataset.presenceSub;
  store.me = { id: null, username: session.username || '' };
  store.loadPending();
  ui.setMe(store.me.username);
  ui.showChat();
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
    ui.invalidate('rooms', 'header');
  }).catch(showError);
}

let ending = false;
function endSession(why) {
  if (ending || !session.loggedIn) return;
  ending = true;
  try {
    if (socket) socket.stop();
    socket = null;
    sync.reset();
    presenceSub.reset();
    session.clear({ broadcast: why === 'logout' });
    store.clearSaved();
    sessionStorage.removeItem(ACTIVE_KEY);
    store.reset();
    ui.showLogin();
    ui.setConnState('offline');
    if (why === 'expired' || why === 'peer-logout') {
      ui.showBanner('Your session has ended. Please log in again.', 'info', 0);
    } else {
      ui.hideBanner();
    }
  } finally {
    ending = false;
  }
}

session.addEventListener('ended', () => endSession('peer-logout'));

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
  endSession('expired');
  return 'logout';
}

function onClosed(code) {
  sync.onBreak();
  ui.el['conn-state'].dataset.closeCode = String(code); // for tests and support
  for (const s of store.state.values()) s.typing.clear();
  ui.invalidate('typing');
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
  resyncing = false;
  invalidateMemberPages(); // member frames sent while we were away are lost: fetch again
  presenceSub.onReady(); // a new connection has no presence_sub yet
  sync.onReady();
  outbox.resend();
  restoreActiveRoom();
  const active = store.activeRoomId;
  if (active && !store.rs(active).loaded) sync.loadFirst(active);
  ui.invalidate('rooms', 'header', 'messages', 'composer');
}

function onMessage(msg) {
  if (!msg || typeof msg.room !== 'string') return;
  if (!store.rooms.has(msg.room)) learnRoom(msg.room);
  const s = store.rs(msg.room);
  const added = store.merge(msg.room, [msg]);
  if (msg.sender) s.typing.delete(msg.sender);
  noteNew(msg.room, added);
  if (msg.room === store.activeRoomId) ui.invalidate('messages', 'typing');
}

function onAck(f) {
  const added = store.ack(f.client_msg_id, f.message);
  const roomId = f.message && f.message.room;
  if (roomId) {
    if (added.length) store.touch(roomId);
    if (roomId === store.activeRoomId) ui.invalidate('messages');
    ui.invalidate('rooms');
  }
}

function onErrorFrame(f) {
  const text = errorText(f.code, f.message);
  if (f.client_msg_id && store.pending.has(f.client_msg_id)) {
    const p = store.fail(f.client_msg_id, f.code, text);
    if (p && p.room === store.activeRoomId) ui.invalidate('messages');
    else ui.showBanner(`A message was not sent: ${text}`);
    return;
  }
  if (f.client_msg_id) return; // already confirmed: a late duplicate answer
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

function noteNew(roomId, added) {
  if (!added.length) return;
  const s = store.rs(roomId);
  const unseen = roomId !== store.activeRoomId || document.hidden;
  for (const m of added) if (!store.isMe(m.sender) && unseen) s.unread += 1;
  store.touch(roomId);
  ui.invalidate('rooms');
}

// ---------------------------------------------------------------- rooms

function openRoom(roomId) {
  if (!store.rooms.has(roomId)) return;
  store.activeRoomId = roomId;
  sessionStorage.setItem(ACTIVE_KEY, roomId);
  const s = store.rs(roomId);
  s.unread = 0;
  if (!s.loaded) sync.loadFirst(roomId);
  if (mobile.matches) ui.setSidebar(false);
  ui.scrollToBottom();
  ui.invalidate('rooms', 'header', 'messages', 'typing', 'composer');
  // after the render pass (queued first) has enabled the composer
  if (!mobile.matches) queueMicrotask(() => ui.el['composer-input'].focus());
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
};

// ---------------------------------------------------------------- start

bindControls({
  store, ui, api, session, outbox, openRoom, dropRoom, endSession, enterChat, refreshPresence,
  showError, maybeLoadOlder, socket: () => socket,
});
if (session.loggedIn) enterChat();
else {
  ui.showLogin();
  ui.setConnState('offline');
}
