// Rendering. Every piece of user data goes into the page through textContent or an attribute
// value, never through innerHTML. Renders are batched: invalidate() marks parts dirty and one
// pass at the end of the current task redraws them.

import { hasMemberList, memberCount, subscriptionList, visibleRange } from './members.js';
import { codePoints } from './store.js';

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
      'people-results',
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
      btn.append(h('span', { class: 'room-name', text: st.roomName(room) }));
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
    this.el['room-body'].classList.toggle('has-details', isGroup);
    this.el['empty-pane'].hidden = Boolean(room);
    this.el.messages.hidden = !room;
    this.el.composer.hidden = !room;
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

    const atBottom = this.stickBottom;
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
    for (const m of s.sorted()) {
      follow(this._node(`m:${m.id}`, 'm', () => this._messageEl(m)), m.sender, m._ms, m.id);
    }
    const me = st.me ? st.me.username : '';
    for (const p of st.pendingFor(roomId)) {
      const node = this._node(`p:${p.cmid}`, `${p.state}|${p.error || ''}`, () => this._pendingEl(p));
      follow(node, me, p.createdMs);
    }
    reconcile(box, desired);
    const used = new Set(desired);
    for (const [k, n] of this.nodes) if (!used.has(n)) this.nodes.delete(k);

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

  _messageEl(m) {
    const own = this.store.isMe(m.sender);
    const d = new Date(m._ms);
    return h('div', {
      class: own ? 'msg own' : 'msg',
      dataset: { msgId: m.id, clientMsgId: m.client_msg_id || null, sender: m.sender, testid: 'message' },
    }, [
      h('div', { class: 'msg-meta' }, [
        h('span', { class: 'msg-sender', text: m.sender }),
        h('time', { class: 'msg-time', datetime: m.sent_at, title: fullFmt.format(d), text: timeFmt.format(d) }),
      ]),
      h('div', { class: 'msg-body', text: m.body }),
    ]);
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
      h('div', { class: 'msg-body', text: p.body }),
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
