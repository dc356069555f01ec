// The page's controls: login and registration, the sidebar forms, the member panel, the
// composer (with the typing indicator and the length limit) and the message actions.

import { errorText } from './errors.js';
import { hasMemberList } from './members.js';
import { codePoints } from './store.js';
import { MAX_BODY } from './ui.js';

const TYPING_SEND_EVERY_MS = 3_000;
const SEARCH_DEBOUNCE_MS = 250;
const SEARCH_MIN = 3; // the server wants at least 3 characters
const SEARCH_LIMIT = 8;
const USERNAME_RE = /^[a-z0-9_.-]+$/;
export const mobile = window.matchMedia('(max-width: 700px)');

function autoGrow(input) {
  input.rows = Math.min(6, Math.max(1, input.value.split('\n').length));
}

async function busy(button, fn) {
  button.disabled = true;
  try {
    return await fn();
  } finally {
    button.disabled = false;
  }
}

function parseNames(text) {
  return [...new Set(text.split(/[\s,;]+/).map((s) => s.trim().toLowerCase()).filter(Boolean))];
}

export function bindControls(app) {
  const { store, ui, api, session, outbox, notifier } = app;
  const el = ui.el;
  const lastTypingSent = new Map(); // room id -> ms

  el['login-form'].addEventListener('submit', (ev) => {
    ev.preventDefault();
    doLogin(false);
  });
  el['register-btn'].addEventListener('click', () => doLogin(true));

  // every tab of the browser at once (js/session.js), then the server
  el['logout-btn'].addEventListener('click', () => busy(el['logout-btn'], () => session.logout()));

  // asked only here, on a click: never on load
  el['notify-btn'].addEventListener('click', async () => {
    el['notify-btn'].disabled = true; // until answered; stays so when the user said no
    ui.setNotifyState(await notifier.toggle());
  });

  el['mute-btn'].addEventListener('click', () => {
    const roomId = store.activeRoomId;
    if (!roomId) return;
    const muted = !store.isMuted(roomId);
    busy(el['mute-btn'], async () => {
      try {
        const res = await api.setMuted(roomId, muted);
        store.setMuted(roomId, res && typeof res.muted === 'boolean' ? res.muted : muted);
        ui.invalidate('rooms', 'header');
      } catch (e) {
        app.showError(e);
      }
    });
  });

  el['sidebar-toggle'].addEventListener('click', () => {
    ui.setSidebar(!document.body.classList.contains('sidebar-open'));
  });
  el['sidebar-backdrop'].addEventListener('click', () => ui.setSidebar(false));
  el['members-toggle'].addEventListener('click', () => ui.toggleDetails());

  el['room-list'].addEventListener('click', (ev) => {
    const li = ev.target.closest('[data-room-id]');
    if (li) app.openRoom(li.dataset.roomId);
  });

  el['new-dm-form'].addEventListener('submit', (ev) => {
    ev.preventDefault();
    startDirect(el['new-dm-input'].value.trim().toLowerCase(), el['new-dm-btn']);
  });

  /** Open the direct chat with `username`: the one we have, or a new one. */
  function startDirect(username, button) {
    if (!username) return;
    if (store.isMe(username)) {
      ui.showBanner('You cannot start a direct chat with yourself.');
      return;
    }
    const have = store.orderedRooms().find((r) => r.kind === 'direct' && store.peerOf(r) === username);
    if (have) {
      clearSearch();
      app.openRoom(have.id);
      return;
    }
    busy(button, async () => {
      try {
        const room = await api.createDirect(username);
        store.upsertRoom(room, true);
        app.refreshPresence(room.members || []);
        clearSearch();
        ui.hideBanner();
        app.openRoom(room.id);
      } catch (e) {
        app.showError(e, { username });
      }
    });
  }

  // ---- people search: by the start of a username, debounced, the newest answer wins
  let searchTimer = null;
  let searchSeq = 0;
  function clearSearch() {
    clearTimeout(searchTimer);
    searchSeq += 1;
    el['new-dm-input'].value = '';
    ui.renderPeople(null);
  }
  el['new-dm-input'].addEventListener('input', () => {
    clearTimeout(searchTimer);
    const prefix = el['new-dm-input'].value.trim().toLowerCase();
    const seq = ++searchSeq;
    if (prefix.length < SEARCH_MIN || !USERNAME_RE.test(prefix)) {
      ui.renderPeople(null);
      return;
    }
    searchTimer = setTimeout(async () => {
      try {
        const data = await api.users(prefix, SEARCH_LIMIT + 1); // I may be among them
        if (seq !== searchSeq) return; // typed on meanwhile
        const names = ((data && data.users) || [])
          .map((u) => String(u.username).toLowerCase())
          .filter((u) => !store.isMe(u))
          .slice(0, SEARCH_LIMIT);
        ui.renderPeople(names, names.length ? null : 'Nobody’s username starts with that.');
      } catch (e) {
        if (seq !== searchSeq) return;
        const wait = e && e.retryAfter ? ` Try again in ${e.retryAfter} s.` : ' Wait a moment.';
        const note = e && e.status === 429 ? `Too many searches.${wait}`
          : 'The search did not work. Try again.';
        ui.renderPeople([], note);
      }
    }, SEARCH_DEBOUNCE_MS);
  });
  el['new-dm-input'].addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      searchSeq += 1;
      clearTimeout(searchTimer);
      ui.renderPeople(null);
    } else if (ev.key === 'ArrowDown') {
      const first = el['people-results'].querySelector('button');
      if (first) {
        ev.preventDefault();
        first.focus();
      }
    }
  });
  el['people-results'].addEventListener('keydown', (ev) => {
    if (ev.key !== 'ArrowDown' && ev.key !== 'ArrowUp') return;
    const buttons = [...el['people-results'].querySelectorAll('button')];
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    ev.preventDefault();
    const next = ev.key === 'ArrowDown' ? buttons[i + 1] : buttons[i - 1];
    (next || el['new-dm-input']).focus();
  });
  for (const list of [el['people-results'], el['online-list']]) {
    list.addEventListener('click', (ev) => {
      const b = ev.target.closest('[data-dm]');
      if (b) startDirect(b.dataset.dm, b);
    });
  }

  el['new-group-form'].addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = el['new-group-name'].value.trim();
    const members = parseNames(el['new-group-members'].value).filter((m) => !store.isMe(m));
    if (!name) {
      ui.showBanner('Give the group a name.');
      return;
    }
    busy(el['new-group-btn'], async () => {
      try {
        const room = await api.createGroup(name, members);
        store.upsertRoom(room, true);
        app.refreshPresence(room.members || []);
        el['new-group-name'].value = '';
        el['new-group-members'].value = '';
        ui.hideBanner();
        app.openRoom(room.id);
      } catch (e) {
        app.showError(e, { useServerMessage: true });
      }
    });
  });

  el['add-member-form'].addEventListener('submit', (ev) => {
    ev.preventDefault();
    const roomId = store.activeRoomId;
    const username = el['add-member-input'].value.trim().toLowerCase();
    if (!roomId || !username) return;
    busy(el['add-member-btn'], async () => {
      try {
        const room = await api.addMember(roomId, username);
        if (room && room.id && hasMemberList(room)) {
          store.upsertRoom(room);
          app.refreshPresence([username]); // a new contact
        } else if (room && room.id) {
          // a big group: the same change as its member_joined frame (whichever comes first)
          store.applyMemberEvent(roomId, username, true, room.member_count);
        }
        el['add-member-input'].value = '';
        ui.hideBanner();
        ui.invalidate('header');
      } catch (e) {
        app.showError(e, { username });
      }
    });
  });

  el['member-list'].addEventListener('click', (ev) => {
    const btn = ev.target.closest('[data-remove-member]');
    const roomId = store.activeRoomId;
    if (!btn || !roomId) return;
    const username = btn.dataset.removeMember;
    busy(btn, async () => {
      try {
        await api.removeMember(roomId, username);
        // a small room's list says who is left; a big group's count comes with member_left
        // (applying it here too could count the removal twice)
        if (hasMemberList(store.rooms.get(roomId))) store.applyMemberEvent(roomId, username, false);
        ui.invalidate('header');
      } catch (e) {
        app.showError(e, { username });
      }
    });
  });

  el['leave-btn'].addEventListener('click', () => {
    const roomId = store.activeRoomId;
    if (!roomId || !store.me) return;
    busy(el['leave-btn'], async () => {
      try {
        await api.removeMember(roomId, store.me.username);
        app.dropRoom(roomId);
        ui.setSidebar(true);
      } catch (e) {
        app.showError(e);
      }
    });
  });

  const input = el['composer-input'];
  el.composer.addEventListener('submit', (ev) => {
    ev.preventDefault();
    sendComposer();
  });
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      sendComposer();
    }
  });
  input.addEventListener('input', () => {
    autoGrow(input);
    ui.invalidate('composer');
    const roomId = store.activeRoomId;
    const socket = app.socket();
    if (!roomId || !socket || input.value.trim() === '') return;
    const now = Date.now();
    if (now - (lastTypingSent.get(roomId) || 0) >= TYPING_SEND_EVERY_MS) {
      if (socket.send({ type: 'typing', room: roomId })) lastTypingSent.set(roomId, now);
    }
  });

  el.messages.addEventListener('click', (ev) => {
    const retry = ev.target.closest('[data-retry]');
    const discard = ev.target.closest('[data-discard]');
    if (retry) outbox.retry(retry.dataset.retry);
    else if (discard) outbox.discard(discard.dataset.discard);
    else return;
    ui.invalidate('messages');
  });

  el.messages.addEventListener('scroll', () => {
    if (ui.nearTop()) app.maybeLoadOlder();
    app.maybeMarkRead(); // scrolled down to the newest messages
  }, { passive: true });

  mobile.addEventListener('change', () => ui.setSidebar(mobile.matches && !store.activeRoomId));

  function sendComposer() {
    const input = ui.el['composer-input'];
    const roomId = store.activeRoomId;
    if (!roomId || !store.rooms.has(roomId)) return;
    const body = input.value;
    if (body.trim() === '') {
      ui.showBanner(errorText('empty_body'));
      return;
    }
    if (codePoints(body) > MAX_BODY) {
      ui.showBanner(errorText('body_too_long'));
      return;
    }
    const p = store.addPending(roomId, body);
    input.value = '';
    autoGrow(input);
    outbox.transmit(p); // offline: it stays pending and goes out after the next `ready`
    lastTypingSent.delete(roomId); // the others cleared our indicator when the message came
    store.touch(roomId);
    ui.scrollToBottom();
    ui.invalidate('messages', 'rooms', 'composer');
  }

  async function doLogin(register) {
    const username = el.username.value.trim().toLowerCase();
    const password = el.password.value;
    if (!username || !password) {
      ui.showBanner('Enter a username and a password.');
      return;
    }
    el['login-btn'].disabled = true;
    el['register-btn'].disabled = true;
    try {
      if (register) await api.register(username, password);
      const answer = await api.login(username, password);
      ui.hideBanner();
      el.password.value = '';
      session.adoptLogin(answer, username); // its `token` event enters the chat
    } catch (e) {
      app.showError(e);
    } finally {
      el['login-btn'].disabled = false;
      el['register-btn'].disabled = false;
    }
  }
}
