// Rendering. Every piece of user data goes into the page through textContent or an attribute
// value, never through innerHTML. Renders are batched: invalidate() marks parts dirty and one
// pass at the end of the current task redraws them.

import { hasMemberList, memberCount, subscriptionList, visibleRange } from './members.js';
import { codePoints, isNotice } from './store.js';
import { linkParts, noticeText, previewText, snippetParts } from './text.js';

export const MAX_BODY = 4000;
const GROUP_MS = 5 * 60_000;
// a big group's member list is virtual: rows of this height (style.css: #member-list.virtual)
export const MEMBER_ROW_PX = 30;
const MEMBER_OVERSCAN = 6; // rows kept in the DOM above and below the visible ones
const countFmt = new Intl.NumberFormat();

/** Create an element. props: class, text, dataset, any attribute; children: nodes or strings. */
export function h(tag, props = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k === 'dataset') {
      for (const [dk, dv] of Object.entries(v)) if (dv !== undefined && dv !== null) e.dataset[dk] = dv;
    } else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of [].concat(children)) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });
const dayFmt = new Intl.DateTimeFormat(undefined, {
  weekday: 'long', year: 'numeric', month: 'long', day: 'numeric',
});
const weekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
const shortDateFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const resultFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** The time of the conversation list: 14:05 today, "Mon" this week, "3 Nov" before. */
export function shortTime(ms, now = Date.now()) {
  const d = new Date(ms);
  if (dayKey(ms) === dayKey(now)) return timeFmt.format(d);
  if (now - ms < 6 * 86_400_000 && ms <= now) return weekdayFmt.format(d);
  return shortDateFmt.format(d);
}

/** A body as text and links (http/https, new tab, no referrer): DOM nodes, never HTML. */
export function bodyNodes(body) {
  return linkParts(body).map((p) => (p.href
    ? h('a', { href: p.href, target: '_blank', rel: 'noopener noreferrer', text: p.text })
    : document.createTextNode(p.text)));
}

function dayKey(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

function dayLabel(ms) {
  const now = new Date();
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (dayKey(ms) === dayKey(now.getTime())) return 'Today';
  if (dayKey(ms) === dayKey(yesterday.getTime())) return 'Yesterday';
  return dayFmt.format(new Date(ms));
}

/** The dot of a user: online, offline, or unknown (my own connection is down). */
function dotClass(st, on) {
  if (!st.presenceKnown) return 'online-dot unknown';
  return on ? 'online-dot on' : 'online-dot';
}

function presenceWord(st, on) {
  if (!st.presenceKnown) return 'presence unknown';
  return on ? 'online' : 'offline';
}

function reconcile(parent, nodes) {
  let cur = parent.firstChild;
  for (const n of nodes) {
    if (n === cur) {
      cur = cur.nextSibling;
      continue;
    }
    parent.insertBefore(n, cur);
  }
  while (cur) {
    const next = cur.nextSibling;
    parent.removeChild(cur);
    cur = next;
  }
}

const $ = (id) => document.getElementById(id);

export class UI {
  constructor(store) {
    this.store = store;
    this.el = {};
    for (const id of [
      'topbar', 'sidebar-toggle', 'conn-state', 'me', 'logout-btn', 'error-banner', 'error-text',
      'error-close', 'login-view', 'login-form', 'username', 'password', 'login-btn',
      'register-btn', 'chat-view', 'sidebar', 'sidebar-backdrop', 'new-dm-form', 'new-dm-input',
      'new-dm-btn', 'new-group-form', 'new-group-name', 'new-group-members', 'new-group-btn',
      'room-list', 'no-rooms', 'room-pane', 'room-header', 'room-dot', 'room-title', 'room-sub',
      'members-toggle', 'leave-btn', 'room-body', 'messages', 'empty-pane', 'typing', 'composer',
      'composer-input', 'send-btn', 'char-count', 'room-details', 'member-list',
      'add-member-form', 'add-member-input', 'add-member-btn', 'member-count',
      'notify-btn', 'mute-btn', 'jump-newest', 'online-list', 'online-count', 'online-empty',
      'people-results', 'search-form', 'search-input', 'search-room-only', 'search-panel',
      'search-close', 'search-status', 'search-results', 'search-more', 'settings-btn',
      'group-settings', 'group-name-input', 'who-can-add', 'settings-save', 'settings-note',
      'add-member-note', 'search-title',
    ]) {
      this.el[id] = $(id);
    }
    this.dirty = new Set();
    this.scheduled = false;
    this.nodes = new Map(); // key -> element, for the messages of the room on screen
    this.renderedRoom = null;
    this.stickBottom = true;
    this.bannerTimer = null;
    this.typingTimer = null;
    this.connected = false;
    this.afterMessages = null; // hook: called after each render of the message list
    this.pagesFor = null; // hook: the MemberPages of a big group (app.js makes them)
    this.onVisibleMembers = null; // hook: usernames of a big group's rows on screen ([] if none)
    this.memberRoom = null; // the big group whose rows are in #member-list
    this.memberNodes = new Map(); // key -> row element, for that list
    this.menuFor = null; // id of the message whose actions menu is open
    this.confirmDelete = null; // id of the message asking "Delete this message?"
    this.editing = null; // {id, draft}: the message being edited in place
    this.highlight = null; // id of the message a search result opened at
    this.scrollTo = null; // id of a message to bring into view at the next render
    this.memberTop = h('li', { class: 'member-spacer', 'aria-hidden': 'true' });
    this.memberBottom = h('li', { class: 'member-spacer', 'aria-hidden': 'true' });

    this.el['error-close'].addEventListener('click', () => this.hideBanner());
    this.el.messages.addEventListener('scroll', () => {
      this.stickBottom = this.atBottom();
      this.invalidate('jump');
    }, { passive: true });
    this.el['jump-newest'].addEventListener('click', () => this.scrollToBottom());
    const list = this.el['member-list'];
    list.addEventListener('scroll', () => this.invalidate('members'), { passive: true });
    // shown, hidden (the toggle, the 1000 px breakpoint) or resized: other rows are visible
    if (typeof ResizeObserver === 'function') {
      new ResizeObserver(() => this.invalidate('members')).observe(list);
    }
  }

  invalidate(...parts) {
    for (const p of parts) this.dirty.add(p);
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => this.flush());
  }

  flush() {
    this.scheduled = false;
    const d = this.dirty;
    this.dirty = new Set();
    if (d.has('rooms')) this.renderRooms();
    if (d.has('header')) this.renderHeader();
    if (d.has('header') || d.has('members')) this.renderMembers();
    if (d.has('messages')) {
      this.renderMessages();
      if (this.afterMessages) this.afterMessages();
    }
    if (d.has('typing')) this.renderTyping();
    if (d.has('composer')) this.renderComposer();
    if (d.has('rooms') || d.has('online')) this.renderOnline();
    if (d.has('messages') || d.has('rooms') || d.has('jump')) this.renderJump();
    const unread = this.store.totalUnread();
    document.title = unread ? `(${unread}) Chat` : 'Chat';
  }

  // ---- views
  showLogin() {
    document.body.classList.add('logged-out');
    document.body.classList.remove('sidebar-open');
    this.el['login-view'].hidden = false;
    this.el['chat-view'].hidden = true;
    this.el['logout-btn'].hidden = true;
    this.el.me.textContent = '';
    this.el['room-list'].replaceChildren();
    this.el['online-list'].replaceChildren();
    this.el['people-results'].replaceChildren();
    this.el['people-results'].hidden = true;
    this.renderSearch(null);
    this.el['search-input'].value = '';
    this.editing = null;
    this.menuFor = null;
    this.confirmDelete = null;
    this.highlight = null;
    this.el.messages.replaceChildren();
    this.nodes = new Map();
    this.renderedRoom = null;
    this.el.typing.textContent = '';
    this.el['login-btn'].disabled = false;
    this.el['register-btn'].disabled = false;
    this.el.password.value = '';
    this.el.username.focus();
  }

  showChat() {
    document.body.classList.remove('logged-out');
    this.el['login-view'].hidden = true;
    this.el['chat-view'].hidden = false;
    this.el['logout-btn'].hidden = false;
    if (!this.store.activeRoomId) this.setSidebar(true);
    this.invalidate('rooms', 'header', 'messages', 'typing', 'composer');
  }

  /** The notifications button: on | off | blocked | unsupported (js/notify.js). */
  setNotifyState(state) {
    const b = this.el['notify-btn'];
    b.hidden = state === 'unsupported';
    b.dataset.state = state;
    b.setAttribute('aria-pressed', String(state === 'on'));
    b.disabled = state === 'blocked';
    const label = {
      on: 'Notifications on',
      off: 'Enable notifications',
      blocked: 'Notifications blocked',
    }[state] || '';
    b.title = state === 'blocked'
      ? 'Notifications are blocked for this site in the browser settings.'
      : (state === 'on' ? 'Click to turn desktop notifications off' : 'Click to get desktop notifications');
    b.querySelector('.label').textContent = label;
    b.setAttribute('aria-label', label); // the label is hidden on a phone: the icon stays
    b.querySelector('.icon').className = state === 'on' ? 'icon bell' : 'icon bell-off';
  }

  setMe(username) {
    this.el.me.textContent = username || '';
    this.el['logout-btn'].title = username ? `Log out ${username}` : 'Log out';
  }

  setSidebar(open) {
    document.body.classList.toggle('sidebar-open', open);
    this.el['sidebar-toggle'].setAttribute('aria-expanded', String(open));
  }

  toggleDetails() {
    const open = !this.el['room-body'].classList.contains('details-open');
    this.el['room-body'].classList.toggle('details-open', open);
    this.el['members-toggle'].setAttribute('aria-expanded', String(open));
    this.invalidate('members');
  }

  setConnState(state) {
    const c = this.el['conn-state'];
    c.textContent = state;
    c.dataset.state = state;
    this.connected = state === 'online';
    this.invalidate('composer');
  }

  // ---- banner
  showBanner(text, kind = 'error', ms = 12_000) {
    const b = this.el['error-banner'];
    this.el['error-text'].textContent = text;
    b.dataset.kind = kind;
    b.hidden = false;
    clearTimeout(this.bannerTimer);
    if (ms) this.bannerTimer = setTimeout(() => this.hideBanner(), ms);
  }

  hideBanner() {
    clearTimeout(this.bannerTimer);
    this.el['error-banner'].hidden = true;
    this.el['error-text'].textContent = '';
  }

  // ---- sidebar
  renderRooms() {
    const st = this.store;
    const items = st.orderedRooms().map((room) => {
      const s = st.state.get(room.id);
      const unread = s ? s.unread : 0;
      const active = room.id === st.activeRoomId;
      const btn = h('button', {
        type: 'button', class: 'room-btn', 'aria-current': active ? 'true' : null,
      });
      if (room.kind === 'direct') {
        const peer = st.peerOf(room);
        const on = st.online.has((peer || '').toLowerCase());
        const word = presenceWord(st, on);
        btn.append(h('span', {
          class: dotClass(st, on),
          title: word,
          role: 'img',
          'aria-label': word,
          dataset: { user: peer },
        }));
      } else {
        btn.append(h('span', { class: 'group-icon', text: '#', 'aria-hidden': 'true' }));
      }
      const muted = st.isMuted(room.id);
      const last = st.preview(room.id);
      const text = last ? previewText(last, { isMe: (u) => st.isMe(u), isGroup: room.kind === 'group' }) : '';
      btn.append(h('span', { class: 'room-text' }, [
        h('span', { class: 'room-line' }, [
          h('span', { class: 'room-name', text: st.roomName(room) }),
          last ? h('time', {
            class: 'room-time', datetime: last.sent_at, text: shortTime(last._ms),
            title: fullFmt.format(new Date(last._ms)),
          }) : null,
        ]),
        h('span', {
          class: `room-preview${last && (last.deleted || isNotice(last)) ? ' quiet' : ''}`,
          text, dataset: { testid: 'room-preview' },
        }),
      ]));
      if (muted) {
        btn.append(h('span', { class: 'icon bell-off muted-icon', title: 'muted', role: 'img', 'aria-label': 'muted' }));
      }
      btn.append(h('span', {
        class: muted ? 'unread muted' : 'unread',
        text: unread ? String(unread > 99 ? '99+' : unread) : '',
        hidden: !unread,
        dataset: { count: String(unread) },
        'aria-label': `${unread} unread`,
      }));
      return h('li', {
        class: `room${active ? ' active' : ''}${unread ? ' has-unread' : ''}${muted ? ' muted' : ''}`,
        dataset: { roomId: room.id, kind: room.kind, testid: 'room', muted: muted ? '1' : null },
      }, btn);
    });
    this.el['room-list'].replaceChildren(...items);
    this.el['no-rooms'].hidden = items.length > 0;
  }

  // ---- room header and members
  renderHeader() {
    const st = this.store;
    const room = st.rooms.get(st.activeRoomId) || null;
    const isGroup = Boolean(room && room.kind === 'group');
    this.el['room-title'].textContent = room ? st.roomName(room) : 'No conversation selected';
    this.el['room-pane'].dataset.activeRoom = room ? room.id : '';
    const dot = this.el['room-dot'];
    const sub = this.el['room-sub'];
    if (room && room.kind === 'direct') {
      const on = st.online.has((st.peerOf(room) || '').toLowerCase());
      dot.hidden = false;
      dot.className = dotClass(st, on);
      sub.textContent = presenceWord(st, on);
      delete sub.dataset.count;
    } else if (isGroup) {
      const n = memberCount(room);
      dot.hidden = true;
      sub.textContent = `${countFmt.format(n)} ${n === 1 ? 'member' : 'members'}`;
      sub.dataset.count = String(n);
    } else {
      dot.hidden = true;
      sub.textContent = '';
      delete sub.dataset.count;
    }
    const mute = this.el['mute-btn'];
    mute.hidden = !room;
    if (room) {
      const muted = st.isMuted(room.id);
      mute.setAttribute('aria-pressed', String(muted));
      mute.replaceChildren(
        h('span', { class: muted ? 'icon bell-off' : 'icon bell', 'aria-hidden': 'true' }),
        h('span', { class: 'label', text: muted ? 'Muted' : 'Mute' }),
      );
      mute.title = muted
        ? 'Muted: no notifications from this conversation. Click to unmute.'
        : 'Mute: no notifications from this conversation';
    }
    this.el['leave-btn'].hidden = !isGroup;
    this.el['members-toggle'].hidden = !isGroup;
    this.el['settings-btn'].hidden = !isGroup;
    if (!isGroup) this.showSettings(false);
    this.renderSettings(room);
    this.el['room-body'].classList.toggle('has-details', isGroup);
    this.el['empty-pane'].hidden = Boolean(room);
    this.el.messages.hidden = !room;
    this.el.composer.hidden = !room;
  }

  /** Open or close the group settings form (it lives in the member panel). */
  showSettings(open) {
    const form = this.el['group-settings'];
    const was = !form.hidden;
    form.hidden = !open;
    this.el['settings-btn'].setAttribute('aria-expanded', String(open));
    if (open && !was) {
      this.settingsSig = null; // fill the fields again from the room
      this.renderSettings(this.store.rooms.get(this.store.activeRoomId) || null);
      const body = this.el['room-body'];
      if (!body.classList.contains('details-open')) this.toggleDetails(); // narrow screens
    }
  }

  /** Am I the owner of this group? */
  isOwner(room) {
    const st = this.store;
    return Boolean(room && room.kind === 'group' && room.owner
      && (st.isMe(room.owner) || (st.me && st.me.id && room.owner === st.me.id)));
  }

  /** May I add members to this group (who_can_add)? */
  canAdd(room) {
    if (!room || room.kind !== 'group') return false;
    return room.who_can_add !== 'owner' || this.isOwner(room);
  }

  /**
   * The settings form: the owner edits the name and who may add members; the others see them
   * read-only. The fields are filled from the room when it changes, not while being edited.
   */
  renderSettings(room) {
    const form = this.el['group-settings'];
    const isGroup = Boolean(room && room.kind === 'group');
    const owner = this.isOwner(room);
    const name = this.el['group-name-input'];
    const who = this.el['who-can-add'];
    const sig = isGroup ? `${room.id}|${room.name}|${room.who_can_add}|${room.owner}|${owner}` : '';
    if (sig !== this.settingsSig) {
      this.settingsSig = sig;
      if (isGroup) {
        name.value = room.name || '';
        who.value = room.who_can_add === 'owner' ? 'owner' : 'members';
      }
      this.el['settings-note'].textContent = owner || !isGroup ? ''
        : `Only the owner (${room.owner || 'unknown'}) can change these.`;
    }
    name.readOnly = !owner;
    who.disabled = !owner;
    this.el['settings-save'].hidden = !owner;
    form.dataset.owner = owner ? '1' : '0';
    // adding members: hidden for those who may not (the server refuses them with 403 anyway)
    const canAdd = this.canAdd(room);
    this.el['add-member-form'].hidden = !canAdd;
    const note = this.el['add-member-note'];
    note.hidden = !isGroup || canAdd;
    note.textContent = isGroup && !canAdd
      ? `Only the owner (${room.owner || 'unknown'}) can add members to this group.` : '';
  }

  /** The member panel: the whole list for a room that has one, else a virtual list. */
  renderMembers() {
    const st = this.store;
    const room = st.rooms.get(st.activeRoomId) || null;
    const list = this.el['member-list'];
    const isGroup = Boolean(room && room.kind === 'group');
    this.el['member-count'].textContent = isGroup ? countFmt.format(memberCount(room)) : '';
    if (isGroup && !hasMemberList(room) && this.pagesFor) {
      this._renderBigMembers(room, this.pagesFor(room));
      return;
    }
    this._leaveVirtual();
    if (this.onVisibleMembers) this.onVisibleMembers([]); // small rooms: their members are contacts
    if (!isGroup) {
      list.replaceChildren();
      return;
    }
    const members = [...room.members].sort();
    list.replaceChildren(...members.map((m) => this._memberEl(room, m, false)));
  }

  _leaveVirtual() {
    const list = this.el['member-list'];
    if (!list.classList.contains('virtual')) return;
    list.classList.remove('virtual');
    list.removeAttribute('tabindex');
    for (const k of ['total', 'loaded', 'first', 'last', 'requests']) delete list.dataset[k];
    this.memberRoom = null;
    this.memberNodes = new Map();
    list.replaceChildren();
  }

  /** One row of the member list (`stale`: shown from before a change, being fetched again). */
  _memberEl(room, m, stale) {
    const st = this.store;
    const owner = (room.owner || '').toLowerCase();
    const iAmOwner = st.isMe(room.owner) || Boolean(st.me && st.me.id && room.owner === st.me.id);
    const on = st.online.has(m.toLowerCase()) || st.isMe(m);
    const li = h('li', { class: stale ? 'member stale' : 'member', dataset: { member: m } }, [
      h('span', { class: st.isMe(m) ? 'online-dot on' : dotClass(st, on), 'aria-hidden': 'true' }),
      h('span', { class: 'member-name', text: m }),
    ]);
    if (m.toLowerCase() === owner) li.append(h('span', { class: 'tag', text: 'owner' }));
    if (st.isMe(m)) li.append(h('span', { class: 'tag', text: 'you' }));
    if (iAmOwner && !st.isMe(m)) {
      li.append(h('button', {
        type: 'button',
        class: 'icon-btn remove-member',
        title: `Remove ${m}`,
        'aria-label': `Remove ${m}`,
        dataset: { removeMember: m },
        text: '×',
      }));
    }
    return li;
  }

  /**
   * A big group: a scroll container as high as every row (two spacers) holding only the rows
   * in view and a few around them; their pages are fetched as they come into view, and their
   * users' presence is asked for (presence_sub) once the scrolling stops.
   */
  _renderBigMembers(room, pages) {
    const st = this.store;
    const list = this.el['member-list'];
    if (!list.classList.contains('virtual') || this.memberRoom !== room.id) {
      this._leaveVirtual();
      list.classList.add('virtual');
      list.setAttribute('tabindex', '0'); // a scroll container: scrollable from the keyboard
      this.memberRoom = room.id;
      list.replaceChildren(this.memberTop, this.memberBottom);
      list.scrollTop = 0;
    }
    const total = pages.total();
    const view = list.clientHeight;
    const shown = view > 0 && list.getClientRects().length > 0;
    const { first, last } = shown
      ? visibleRange(list.scrollTop, view, MEMBER_ROW_PX, total, MEMBER_OVERSCAN)
      : { first: 0, last: -1 };
    const owner = (room.owner || '').toLowerCase();
    const nodes = new Map();
    const rows = [];
    for (let i = first; i <= last; i += 1) {
      const row = pages.row(i);
      let key;
      let make;
      if (row) {
        const m = row.username;
        const on = st.online.has(m) || st.isMe(m);
        key = `m:${m}|${on ? 1 : 0}|${st.presenceKnown ? 1 : 0}|${row.stale ? 1 : 0}|${owner}`;
        make = () => this._memberEl(room, m, Boolean(row.stale));
      } else {
        key = `p:${i}`;
        make = () => h('li', { class: 'member placeholder', 'aria-busy': 'true' },
          h('span', { class: 'member-name', text: '…' }));
      }
      const n = this.memberNodes.get(key) || make();
      n.dataset.index = String(i);
      n.setAttribute('aria-posinset', String(i + 1));
      n.setAttribute('aria-setsize', String(total));
      nodes.set(key, n);
      rows.push(n);
    }
    this.memberNodes = nodes;
    // CSSOM, not a style attribute in the markup: allowed by the CSP (style-src 'self')
    this.memberTop.style.height = `${first * MEMBER_ROW_PX}px`;
    this.memberBottom.style.height = `${Math.max(0, total - Math.max(last, first - 1) - 1) * MEMBER_ROW_PX}px`;
    reconcile(list, [this.memberTop, ...rows, this.memberBottom]);
    // for tests and support
    list.dataset.total = String(total);
    list.dataset.loaded = String(pages.loaded);
    list.dataset.first = String(first);
    list.dataset.last = String(last);
    list.dataset.requests = String(pages.requests);
    if (last >= first) pages.ensure(last, first);
    if (this.onVisibleMembers) {
      this.onVisibleMembers(shown
        ? subscriptionList((i) => pages.row(i), first, last, (u) => st.isMe(u))
        : []);
    }
  }

  // ---- messages
  renderMessages() {
    const st = this.store;
    const box = this.el.messages;
    const roomId = st.activeRoomId;
    if (this.renderedRoom !== roomId) {
      box.replaceChildren();
      this.nodes = new Map();
      this.renderedRoom = roomId;
      this.stickBottom = true;
    }
    if (!roomId) return;
    const s = st.rs(roomId);
    if (s.divider === undefined && s.loaded === true) st.placeDivider(roomId);

    const atBottom = this.stickBottom && !s.hasNewer; // a window in the past: not at the end
    let anchor = null;
    let anchorOffset = 0;
    if (!atBottom) {
      for (const child of box.children) {
        const key = child.dataset.key || '';
        const isMessage = key.startsWith('m:') || key.startsWith('p:');
        if (isMessage && child.offsetTop + child.offsetHeight > box.scrollTop) {
          anchor = child;
          anchorOffset = child.offsetTop - box.scrollTop;
          break;
        }
      }
    }

    const desired = [this._statusNode(s)];
    let lastDay = null;
    const addDay = (ms) => {
      const key = dayKey(ms);
      if (key === lastDay) return;
      lastDay = key;
      desired.push(this._node(`d:${key}`, key, () => h('div', {
        class: 'day-separator', role: 'separator', dataset: { testid: 'day-separator', day: key },
      }, h('span', { text: dayLabel(ms) }))));
    };
    // a message right after one from the same sender (same day, within 5 min) hides its header
    let prev = null;
    let divider = null;
    const follow = (node, sender, ms, id) => {
      const day = lastDay;
      addDay(ms);
      if (id && id === s.divider) {
        divider = this._node('new-divider', 'new', () => h('div', {
          class: 'new-divider', role: 'separator', dataset: { testid: 'new-divider' },
        }, h('span', { text: 'New messages' })));
        desired.push(divider);
        prev = null; // the first new message shows its sender
      }
      const cont = Boolean(prev && day === lastDay && prev.sender === sender && ms - prev.ms < GROUP_MS);
      node.classList.toggle('cont', cont);
      prev = { sender, ms };
      desired.push(node);
    };
    const room = st.rooms.get(roomId);
    const iOwn = this.isOwner(room);
    for (const m of s.sorted()) {
      if (isNotice(m)) {
        const node = this._node(`n:${m.id}`, 'n', () => this._noticeEl(m));
        follow(node, null, m._ms, m.id);
        prev = null; // the message after a notice shows its sender
        continue;
      }
      const change = st.changeFor(m.id);
      const sig = [
        m._v || 0, this.menuFor === m.id, this.confirmDelete === m.id,
        this.editing && this.editing.id === m.id, this.highlight === m.id, iOwn,
        change ? `${change.cmid}|${change.state}|${change.error || ''}` : '',
      ].join('|');
      follow(this._node(`m:${m.id}`, sig, () => this._messageEl(m, { change, iOwn })), m.sender, m._ms, m.id);
    }
    const me = st.me ? st.me.username : '';
    for (const p of st.pendingFor(roomId)) {
      const node = this._node(`p:${p.cmid}`, `${p.state}|${p.error || ''}`, () => this._pendingEl(p));
      follow(node, me, p.createdMs);
    }
    if (s.hasNewer || s.loadingNewer) desired.push(this._newerNode(s));
    reconcile(box, desired);
    const used = new Set(desired);
    for (const [k, n] of this.nodes) if (!used.has(n)) this.nodes.delete(k);

    if (this.scrollTo) {
      const target = this.nodes.get(`m:${this.scrollTo}`);
      if (target) {
        this.scrollTo = null;
        this.stickBottom = false;
        box.scrollTop = Math.max(0, target.offsetTop - (box.clientHeight - target.offsetHeight) / 2);
        return;
      }
    }
    if (divider && !s.dividerShown && s.loaded === true) {
      // a room just opened with unread messages: show them from the line, unless they all fit
      s.dividerShown = true;
      if (box.scrollHeight - divider.offsetTop > box.clientHeight) {
        box.scrollTop = Math.max(0, divider.offsetTop - 8);
        this.stickBottom = false;
        return;
      }
    }
    if (atBottom) box.scrollTop = box.scrollHeight;
    else if (anchor && anchor.isConnected) box.scrollTop = anchor.offsetTop - anchorOffset;
  }

  /** Is the message list scrolled to its end (within a few pixels)? */
  atBottom() {
    const box = this.el.messages;
    if (box.hidden || box.getClientRects().length === 0) return false;
    return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  }

  /** "N new messages ↓": shown while scrolled up in a room with unread messages below. */
  renderJump() {
    const st = this.store;
    const b = this.el['jump-newest'];
    const s = st.activeRoomId ? st.state.get(st.activeRoomId) : null;
    if (s && s.hasNewer) { // a window in the past (a search result): back to the newest
      b.hidden = false;
      b.textContent = s.unread ? `Jump to present (${s.unread > 99 ? '99+' : s.unread} new) ↓` : 'Jump to present ↓';
      b.dataset.count = String(s.unread || 0);
      b.dataset.present = '1';
      return;
    }
    delete b.dataset.present;
    const n = s && s.loaded === true ? s.unread : 0;
    const show = n > 0 && !this.atBottom();
    b.hidden = !show;
    if (show) {
      b.textContent = `${n > 99 ? '99+' : n} new ${n === 1 ? 'message' : 'messages'} ↓`;
      b.dataset.count = String(n);
    }
  }

  /** The sidebar's "Online" section: my contacts who are online (unknown while disconnected). */
  renderOnline() {
    const st = this.store;
    const list = this.el['online-list'];
    const names = st.onlineContacts();
    const known = st.presenceKnown;
    list.dataset.state = known ? 'known' : 'unknown';
    this.el['online-count'].textContent = known ? String(names.length) : '?';
    this.el['online-empty'].textContent = known ? 'None of your contacts is online.'
      : 'Not connected: who is online is unknown.';
    this.el['online-empty'].hidden = names.length > 0;
    const items = names.map((u) => h('li', { class: 'person', dataset: { user: u } },
      h('button', { type: 'button', class: 'person-btn', title: `Chat with ${u}`, dataset: { dm: u } }, [
        h('span', { class: 'online-dot on', 'aria-hidden': 'true' }),
        h('span', { class: 'person-name', text: u }),
      ])));
    list.replaceChildren(...items);
  }

  /** The node for `key`, made again when its signature changed. */
  _node(key, sig, make) {
    let n = this.nodes.get(key);
    if (!n || n._sig !== sig) {
      n = make();
      n._sig = sig;
      n.dataset.key = key;
      this.nodes.set(key, n);
    }
    return n;
  }

  _statusNode(s) {
    let text = '';
    if (s.loaded === 'loading' || s.loadingOlder) text = 'Loading messages…';
    else if (s.loaded === true && !s.hasOlder) text = 'This is the beginning of the conversation.';
    else if (s.loaded === true) text = 'Scroll up for earlier messages.';
    const n = this._node('status', 'status', () => h('div', { id: 'history-status', class: 'hint small' }));
    if (n.textContent !== text) n.textContent = text;
    return n;
  }

  /** Below a window in the past: newer messages are loaded as the user scrolls down. */
  _newerNode(s) {
    const n = this._node('newer', 'newer', () => h('div', { id: 'history-newer', class: 'hint small' }));
    const text = s.loadingNewer ? 'Loading newer messages…' : 'Scroll down for newer messages.';
    if (n.textContent !== text) n.textContent = text;
    return n;
  }

  /** A notice: "alice added bob", centred in the timeline. */
  _noticeEl(m) {
    const d = new Date(m._ms);
    return h('div', {
      class: 'notice', role: 'note',
      dataset: { noticeId: m.id, event: (m.notice && m.notice.event) || null, testid: 'notice' },
    }, [
      h('span', { class: 'notice-text', text: noticeText(m) }),
      h('time', { class: 'notice-time', datetime: m.sent_at, title: fullFmt.format(d), text: timeFmt.format(d) }),
    ]);
  }

  /**
   * A message: its sender and time, the body (text and links), "(edited)", or the tombstone of
   * a deleted one (its body is gone), its actions menu, the edit form when it is being edited,
   * and the state of my edit or delete waiting for its ack.
   */
  _messageEl(m, { change, iOwn }) {
    const st = this.store;
    const own = st.isMe(m.sender);
    const d = new Date(m._ms);
    const deleted = Boolean(m.deleted);
    const editing = this.editing && this.editing.id === m.id && !deleted;
    const cls = ['msg'];
    if (own) cls.push('own');
    if (deleted) cls.push('deleted');
    if (change) cls.push(change.state === 'failed' ? 'change-failed' : 'changing');
    if (this.highlight === m.id) cls.push('highlight');
    const meta = h('div', { class: 'msg-meta' }, [
      h('span', { class: 'msg-sender', text: m.sender }),
      h('time', { class: 'msg-time', datetime: m.sent_at, title: fullFmt.format(d), text: timeFmt.format(d) }),
    ]);
    const canEdit = own && !deleted;
    const canDelete = !deleted && (own || iOwn);
    const children = [meta];
    if (canEdit || canDelete) {
      const open = this.menuFor === m.id;
      meta.append(h('button', {
        type: 'button', class: 'icon-btn msg-menu-btn', title: 'Message actions',
        'aria-label': 'Message actions', 'aria-haspopup': 'menu', 'aria-expanded': String(open),
        dataset: { menu: m.id }, text: '⋯',
      }));
      if (open) {
        children.push(h('div', { class: 'msg-menu', role: 'menu', 'aria-label': 'Message actions' }, [
          canEdit ? h('button', {
            type: 'button', role: 'menuitem', class: 'menu-item', dataset: { action: 'edit', msg: m.id }, text: 'Edit',
          }) : null,
          canDelete ? h('button', {
            type: 'button', role: 'menuitem', class: 'menu-item danger-text', dataset: { action: 'delete', msg: m.id }, text: 'Delete',
          }) : null,
        ]));
      }
    }
    if (deleted) {
      children.push(h('div', { class: 'msg-body tombstone', text: 'message deleted' }));
    } else if (editing) {
      const input = h('textarea', {
        class: 'msg-edit-input', 'aria-label': 'Edit message', rows: '2', dataset: { msg: m.id },
      });
      input.value = this.editing.draft;
      children.push(h('div', { class: 'msg-edit' }, [
        input,
        h('div', { class: 'row msg-edit-actions' }, [
          h('span', { class: 'hint small', text: 'Enter to save · Escape to cancel' }),
          h('span', { class: 'spacer' }),
          h('button', { type: 'button', class: 'secondary', dataset: { action: 'cancel-edit', msg: m.id }, text: 'Cancel' }),
          h('button', { type: 'button', dataset: { action: 'save-edit', msg: m.id }, text: 'Save' }),
        ]),
      ]));
    } else {
      const body = change && change.kind === 'edit' ? change.body : m.body;
      const bodyEl = h('div', { class: 'msg-body' }, bodyNodes(body));
      children.push(bodyEl);
      if (m.edited_at || (change && change.kind === 'edit')) {
        cls.push('edited');
        const at = Date.parse(m.edited_at || '');
        children.push(h('span', {
          class: 'msg-edited', text: '(edited)',
          title: Number.isFinite(at) ? `Edited ${fullFmt.format(new Date(at))}` : 'Edited',
        }));
      }
    }
    if (this.confirmDelete === m.id && !deleted) {
      children.push(h('div', { class: 'msg-confirm', role: 'alertdialog', 'aria-label': 'Delete this message?' }, [
        h('span', { text: 'Delete this message for everyone?' }),
        h('button', { type: 'button', class: 'danger', dataset: { action: 'confirm-delete', msg: m.id }, text: 'Delete' }),
        h('button', { type: 'button', class: 'secondary', dataset: { action: 'cancel-delete', msg: m.id }, text: 'Cancel' }),
      ]));
    }
    if (change && change.state === 'failed') {
      children.push(h('div', { class: 'msg-status msg-error', role: 'alert' }, [
        h('span', { class: 'msg-error-text', text: `${change.kind === 'edit' ? 'Not saved' : 'Not deleted'}: ${change.error || ''}` }),
        h('button', { type: 'button', class: 'link-btn', dataset: { retry: change.cmid }, text: 'Retry' }),
        h('button', { type: 'button', class: 'link-btn', dataset: { discard: change.cmid }, text: 'Discard' }),
      ]));
    } else if (change) {
      children.push(h('div', { class: 'msg-status', text: change.kind === 'edit' ? 'Saving…' : 'Deleting…' }));
    }
    return h('div', {
      class: cls.join(' '),
      dataset: {
        msgId: m.id, clientMsgId: m.client_msg_id || null, sender: m.sender, testid: 'message',
        deleted: deleted ? '1' : null, edited: m.edited_at ? '1' : null,
      },
    }, children);
  }

  _pendingEl(p) {
    const failed = p.state === 'failed';
    const status = failed
      ? h('div', { class: 'msg-status msg-error', role: 'alert' }, [
        h('span', { class: 'msg-error-text', text: p.error || 'Not sent.' }),
        h('button', { type: 'button', class: 'link-btn', dataset: { retry: p.cmid }, text: 'Retry' }),
        h('button', { type: 'button', class: 'link-btn', dataset: { discard: p.cmid }, text: 'Discard' }),
      ])
      : h('div', { class: 'msg-status', text: 'Sending…' });
    return h('div', {
      class: failed ? 'msg own failed' : 'msg own pending',
      dataset: { clientMsgId: p.cmid, testid: 'message', code: p.code || null },
    }, [
      h('div', { class: 'msg-meta' }, [
        h('span', { class: 'msg-sender', text: this.store.me ? this.store.me.username : '' }),
        h('time', { class: 'msg-time', text: timeFmt.format(new Date(p.createdMs)) }),
      ]),
      h('div', { class: 'msg-body' }, bodyNodes(p.body)),
      status,
    ]);
  }

  scrollToBottom() {
    this.stickBottom = true;
    this.invalidate('messages', 'jump');
  }

  /**
   * People search results (GET /api/users?prefix=): `users` a list of names, or a `note`
   * (nothing found, too many searches). null hides the list.
   */
  renderPeople(users, note) {
    const box = this.el['people-results'];
    if (users === null && !note) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    const st = this.store;
    const items = (users || []).map((u) => {
      const on = st.online.has(u);
      return h('li', { class: 'person', dataset: { user: u } },
        h('button', { type: 'button', class: 'person-btn', dataset: { dm: u }, title: `Chat with ${u}` }, [
          h('span', { class: dotClass(st, on), 'aria-hidden': 'true' }),
          h('span', { class: 'person-name', text: u }),
          h('span', { class: 'hint small', text: 'Chat' }),
        ]));
    });
    if (note) items.push(h('li', { class: 'hint small people-note', text: note }));
    box.replaceChildren(...items);
    box.hidden = false;
  }

  /** Is the message list too short to scroll (so scrolling up cannot ask for more)? */
  needsMoreToFill() {
    const box = this.el.messages;
    return !box.hidden && box.scrollHeight <= box.clientHeight + 8;
  }

  nearTop() {
    return this.el.messages.scrollTop < 120;
  }

  nearBottom() {
    const box = this.el.messages;
    return !box.hidden && box.scrollHeight - box.scrollTop - box.clientHeight < 120;
  }

  // ---- search
  /**
   * The search panel. `state`: {q, results: [message], hasMore, busy, note}. A result shows
   * its sender, the conversation, the time and a snippet with the words found marked, all as
   * text. A click (app.js) opens the conversation at that message.
   */
  renderSearch(state) {
    const panel = this.el['search-panel'];
    if (!state) {
      panel.hidden = true;
      this.el['search-results'].replaceChildren();
      return;
    }
    const st = this.store;
    panel.hidden = false;
    this.el['search-title'].textContent = state.q ? `Results for “${state.q}”` : 'Search';
    const items = state.results.map((m) => {
      const room = st.rooms.get(m.room);
      const ms = Date.parse(m.sent_at) || 0;
      return h('li', { class: 'result', dataset: { resultId: m.id, room: m.room } },
        h('button', { type: 'button', class: 'result-btn', dataset: { open: m.id, room: m.room } }, [
          h('span', { class: 'result-meta' }, [
            h('span', { class: 'result-sender', text: m.sender }),
            h('span', { class: 'result-room', text: room ? st.roomName(room) : 'a conversation' }),
            h('time', { class: 'result-time', datetime: m.sent_at, text: resultFmt.format(new Date(ms)) }),
          ]),
          h('span', { class: 'result-snippet' }, snippetParts(m.body, state.q).map((p) => (p.hit
            ? h('mark', { text: p.text }) : document.createTextNode(p.text)))),
        ]));
    });
    this.el['search-results'].replaceChildren(...items);
    let note = state.note || '';
    if (!note && state.busy && !state.results.length) note = 'Searching…';
    if (!note && !state.busy && !state.results.length) note = 'No messages found.';
    this.el['search-status'].textContent = note;
    const more = this.el['search-more'];
    more.hidden = !state.hasMore;
    more.disabled = Boolean(state.busy);
  }

  // ---- typing indicator
  renderTyping() {
    const st = this.store;
    clearTimeout(this.typingTimer);
    const roomId = st.activeRoomId;
    const s = roomId ? st.state.get(roomId) : null;
    const now = Date.now();
    const names = [];
    let next = Infinity;
    if (s) {
      for (const [name, until] of s.typing) {
        if (until <= now) s.typing.delete(name);
        else {
          names.push(name);
          next = Math.min(next, until);
        }
      }
    }
    names.sort();
    let text = '';
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = 'Several people are typing…';
    this.el.typing.textContent = text;
    if (next !== Infinity) {
      this.typingTimer = setTimeout(() => this.invalidate('typing'), next - now + 20);
    }
  }

  // ---- composer
  renderComposer() {
    const st = this.store;
    const hasRoom = Boolean(st.activeRoomId && st.rooms.has(st.activeRoomId));
    const input = this.el['composer-input'];
    input.disabled = !hasRoom;
    const n = codePoints(input.value);
    const over = n > MAX_BODY;
    const counter = this.el['char-count'];
    counter.classList.toggle('over', over);
    if (over) counter.textContent = `${n}/${MAX_BODY}: ${n - MAX_BODY} too many`;
    else if (n > MAX_BODY - 500) counter.textContent = `${n}/${MAX_BODY}`;
    else counter.textContent = '';
    this.el['send-btn'].disabled = !hasRoom || over || input.value.trim() === '';
    input.placeholder = this.connected
      ? 'Write a message…'
      : 'Write a message… (it is sent when the connection is back)';
  }
}
