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
        app.settleNewRoom(room.id);
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
        const room = store.rooms.get(roomId);
        app.showError(e, {
          username,
          forbidden: `Only the owner${room && room.owner ? ` (${room.owner})` : ''} can add members to this group.`,
        });
        if (e && e.status === 403) app.refetchRoom(roomId); // who_can_add changed: show it
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
        app.showError(e, { username, forbidden: 'Only the group’s owner can remove others.' });
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
    } else if (ev.key === 'ArrowUp' && input.value === '' && !ev.isComposing
      && !ev.shiftKey && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
      // Up in an empty composer: edit my last message (as in Slack)
      const m = store.activeRoomId && store.lastEditable(store.activeRoomId);
      if (m) {
        ev.preventDefault();
        startEdit(m);
      }
    }
  });

  // ---- editing and deleting (the message's menu; sent like messages: js/outbox.js)
  function findMessage(id) {
    const s = store.activeRoomId && store.state.get(store.activeRoomId);
    return (s && s.msgs.get(id)) || null;
  }

  function startEdit(m) {
    const change = store.changeFor(m.id);
    ui.editing = { id: m.id, draft: change && change.kind === 'edit' ? change.body : (m.body || '') };
    ui.menuFor = null;
    ui.confirmDelete = null;
    ui.invalidate('messages');
    queueMicrotask(() => {
      const box = el.messages.querySelector(`.msg-edit-input[data-msg="${CSS.escape(m.id)}"]`);
      if (!box) return;
      box.focus();
      box.setSelectionRange(box.value.length, box.value.length);
      box.scrollIntoView({ block: 'nearest' });
    });
  }

  function endEdit() {
    ui.editing = null;
    ui.invalidate('messages');
    if (!mobile.matches) queueMicrotask(() => input.focus());
  }

  function saveEdit(id) {
    const m = findMessage(id);
    const draft = ui.editing && ui.editing.id === id ? ui.editing.draft : null;
    if (!m || draft === null) return endEdit();
    const current = (() => { const c = store.changeFor(id); return c && c.kind === 'edit' ? c.body : m.body; })();
    if (draft === current) return endEdit(); // nothing changed
    if (draft.trim() === '') {
      ui.showBanner('The message is empty. Use Delete to remove it.');
      return undefined;
    }
    if (codePoints(draft) > MAX_BODY) {
      ui.showBanner(errorText('body_too_long'));
      return undefined;
    }
    const c = store.addChange('edit', m.room, m.id, draft);
    outbox.transmitChange(c); // offline: it waits and goes out after the next `ready`
    return endEdit();
  }

  function deleteMessage(id) {
    const m = findMessage(id);
    ui.confirmDelete = null;
    if (!m || m.deleted) {
      ui.invalidate('messages');
      return;
    }
    if (ui.editing && ui.editing.id === id) ui.editing = null;
    const c = store.addChange('delete', m.room, m.id);
    outbox.transmitChange(c);
    ui.invalidate('messages', 'rooms');
  }

  el.messages.addEventListener('input', (ev) => {
    const box = ev.target.closest('.msg-edit-input');
    if (box && ui.editing && ui.editing.id === box.dataset.msg) ui.editing.draft = box.value;
  });

  el.messages.addEventListener('keydown', (ev) => {
    const box = ev.target.closest('.msg-edit-input');
    if (box) {
      if (ev.key === 'Escape') {
        ev.preventDefault();
        endEdit();
      } else if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        if (ui.editing) ui.editing.draft = box.value;
        saveEdit(box.dataset.msg);
      }
      return;
    }
    if (ev.key === 'Escape' && (ui.menuFor || ui.confirmDelete)) {
      const id = ui.menuFor || ui.confirmDelete;
      ui.menuFor = null;
      ui.confirmDelete = null;
      ui.invalidate('messages');
      queueMicrotask(() => {
        const b = el.messages.querySelector(`[data-menu="${CSS.escape(id)}"]`);
        if (b) b.focus();
      });
    }
  });

  // a click anywhere else closes an open menu
  document.addEventListener('click', (ev) => {
    if (!ui.menuFor) return;
    if (ev.target.closest && ev.target.closest('.msg-menu, [data-menu]')) return;
    ui.menuFor = null;
    ui.invalidate('messages');
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
    const menu = ev.target.closest('[data-menu]');
    const action = ev.target.closest('[data-action]');
    if (menu) {
      const id = menu.dataset.menu;
      ui.menuFor = ui.menuFor === id ? null : id;
      ui.confirmDelete = null;
      ui.invalidate('messages');
      if (ui.menuFor) {
        queueMicrotask(() => {
          const first = el.messages.querySelector('.msg-menu [role=menuitem]');
          if (first) first.focus();
        });
      }
      return;
    }
    if (action) {
      const id = action.dataset.msg;
      const m = findMessage(id);
      ui.menuFor = null;
      switch (action.dataset.action) {
        case 'edit': if (m) startEdit(m); break;
        case 'delete':
          ui.confirmDelete = id;
          queueMicrotask(() => {
            const b = el.messages.querySelector('[data-action="confirm-delete"]');
            if (b) b.focus();
          });
          break;
        case 'confirm-delete': deleteMessage(id); break;
        case 'cancel-delete': ui.confirmDelete = null; break;
        case 'save-edit': saveEdit(id); break;
        case 'cancel-edit': endEdit(); break;
        default: break;
      }
      ui.invalidate('messages');
      return;
    }
    const retry = ev.target.closest('[data-retry]');
    const discard = ev.target.closest('[data-discard]');
    if (retry) outbox.retry(retry.dataset.retry);
    else if (discard) outbox.discard(discard.dataset.discard);
    else return;
    ui.invalidate('messages');
  });

  el['jump-newest'].addEventListener('click', () => {
    if (el['jump-newest'].dataset.present && store.activeRoomId) app.jumpToPresent(store.activeRoomId);
  });

  el.messages.addEventListener('scroll', () => {
    if (ui.nearTop()) app.maybeLoadOlder();
    app.maybeLoadNewer();
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
    if (store.rs(roomId).hasNewer) app.jumpToPresent(roomId); // my message goes at the end
    const p = store.addPending(roomId, body);
    input.value = '';
    autoGrow(input);
    outbox.transmit(p); // offline: it stays pending and goes out after the next `ready`
    lastTypingSent.delete(roomId); // the others cleared our indicator when the message came
    store.touch(roomId);
    ui.scrollToBottom();
    ui.invalidate('messages', 'rooms', 'composer');
  }

  // ---- search (GET /api/search): results newest first, paged by `before`
  const SEARCH_PAGE = 20;
  let search = null; // {q, room, results, hasMore, busy, note, seq}
  let searchMsgSeq = 0;
  async function runSearch(more) {
    if (!search) return;
    const seq = more ? search.seq : ++searchMsgSeq;
    search.seq = seq;
    search.busy = true;
    ui.renderSearch(search);
    const last = more ? search.results[search.results.length - 1] : null;
    try {
      const data = await api.search(search.q, {
        room: search.room || undefined, before: last ? last.id : undefined, limit: SEARCH_PAGE,
      });
      if (!search || search.seq !== seq) return; // a newer search meanwhile
      const got = ((data && data.messages) || []).filter((m) => m && typeof m.id === 'string');
      const seen = new Set(search.results.map((m) => m.id));
      search.results = [...search.results, ...got.filter((m) => !seen.has(m.id))];
      search.hasMore = Boolean(data && data.has_more);
      search.note = '';
    } catch (e) {
      if (!search || search.seq !== seq) return;
      search.hasMore = false;
      if (e && e.status === 404 && e.code !== 'room_not_found' && e.code !== 'message_not_found') {
        search.note = 'Search is not available on this server.';
      } else if (e && e.status === 422) {
        search.note = 'Type a word to search for (at most 10 words).';
      } else if (e && e.status === 429) {
        search.note = 'Too many searches. Wait a moment.';
      } else {
        search.note = e && e.text ? e.text() : 'The search did not work. Try again.';
      }
    } finally {
      if (search && search.seq === seq) {
        search.busy = false;
        ui.renderSearch(search);
      }
    }
  }

  function closeSearch() {
    search = null;
    searchMsgSeq += 1;
    ui.renderSearch(null);
  }

  el['search-form'].addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = el['search-input'].value.trim();
    if (!q) {
      closeSearch();
      return;
    }
    const room = el['search-room-only'].checked ? store.activeRoomId : null;
    search = { q, room, results: [], hasMore: false, busy: false, note: '', seq: 0 };
    runSearch(false);
  });
  el['search-input'].addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') closeSearch();
  });
  el['search-close'].addEventListener('click', () => closeSearch());
  el['search-more'].addEventListener('click', () => runSearch(true));
  el['search-results'].addEventListener('click', (ev) => {
    const b = ev.target.closest('[data-open]');
    if (!b) return;
    if (mobile.matches) closeSearch(); // the results cover the conversation on a phone
    app.openAt(b.dataset.room, b.dataset.open);
  });

  // ---- group settings (the owner): rename, who may add members
  el['settings-btn'].addEventListener('click', () => {
    ui.showSettings(el['group-settings'].hidden);
  });
  el['group-settings'].addEventListener('submit', (ev) => {
    ev.preventDefault();
    const roomId = store.activeRoomId;
    const room = roomId && store.rooms.get(roomId);
    if (!room || !ui.isOwner(room)) return;
    const name = el['group-name-input'].value.trim();
    const who = el['who-can-add'].value;
    const changes = {};
    if (name && name !== room.name) changes.name = name;
    if (who !== (room.who_can_add || 'members')) changes.who_can_add = who;
    if (!name) {
      ui.showBanner('Give the group a name.');
      return;
    }
    if (!Object.keys(changes).length) {
      el['settings-note'].textContent = 'Nothing to change.';
      return;
    }
    busy(el['settings-save'], async () => {
      try {
        const updated = await api.updateRoom(roomId, changes);
        if (updated && updated.id && store.rooms.has(updated.id)) store.upsertRoom(updated);
        ui.settingsSig = null;
        ui.invalidate('rooms', 'header');
        queueMicrotask(() => { el['settings-note'].textContent = 'Saved.'; });
      } catch (e) {
        app.showError(e, { forbidden: 'Only the group’s owner can change its settings.', useServerMessage: true });
        if (e && e.status === 403) app.refetchRoom(roomId);
      }
    });
  });

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
