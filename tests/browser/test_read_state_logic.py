"""The client's session, read-state and presence logic (web/js/session.js, readstate.js,
store.js, notify.js) in Chromium, without a backend: a fake session endpoint that rotates its
refresh token and ends the session when a used one comes back (as the server does), the unread
count and the "New messages" line from what the client holds, when a read goes out and when a
notification is raised, and who is listed as online. tests/browser/test_session_browser.py
runs the real thing end to end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser: Any, web_url: str) -> Iterator[Any]:
    context = browser.new_context()
    p = context.new_page()
    p.goto(web_url + "/js/")  # a page of the client's origin that does not run the client
    yield p
    context.close()


# A fake of POST /api/auth/session/{refresh,logout}: the cookie jar is one variable (shared by
# the Session objects of the page, like a browser's tabs). The server decides at once (it
# rotates the token; a token used twice ends the session: a replay) and the answer takes 30 ms
# to come back (so two refreshes at once overlap, and a logout can cross one).
FAKE_SERVER = """
  const server = { jar: 'rt0', used: new Set(), revoked: false, n: 0, inFlight: 0, maxInFlight: 0,
    refreshes: 0, logouts: [], legacyLogouts: [] };
  const answer = (status, body) => new Response(body === undefined ? null : JSON.stringify(body),
    { status, headers: { 'Content-Type': 'application/json' } });
  window.fetch = async (url, init = {}) => {
    const headers = init.headers || {};
    if (url === '/api/auth/logout') {
      server.legacyLogouts.push(headers.Authorization);
      return answer(204);
    }
    if (headers['X-Chat-Session'] !== 'cookie') return answer(403, { error: { code: 'forbidden' } });
    if (url === '/api/auth/session/logout') {
      server.logouts.push(server.jar);
      server.revoked = true;
      server.jar = null;
      return answer(204);
    }
    if (url !== '/api/auth/session/refresh') return answer(404);
    const sent = server.jar; // what the browser sends: the jar as it is now
    server.inFlight += 1;
    server.maxInFlight = Math.max(server.maxInFlight, server.inFlight);
    server.refreshes += 1;
    let status = 200;
    if (!sent || server.revoked) status = 401;
    else if (server.used.has(sent)) { // a replay: the session is over
      server.revoked = true;
      status = 401;
    } else {
      server.used.add(sent);
      server.n += 1;
    }
    const n = server.n;
    await new Promise((r) => setTimeout(r, 30)); // the answer on its way back
    server.inFlight -= 1;
    if (status !== 200) return answer(401, { error: { code: 'invalid_token' } });
    server.jar = 'rt' + n; // the Set-Cookie arrives with the answer
    return answer(200, { access_token: 'at' + n, token_type: 'bearer', expires_in: 900,
      username: 'alice' });
  };
  const { Session } = await import('/js/session.js');
  const until = async (cond, ms = 3000) => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error('condition not met in time');
      await new Promise((r) => setTimeout(r, 5));
    }
  };
"""


def run(page: Any, body: str) -> Any:
    return page.evaluate(f"async () => {{ {FAKE_SERVER}\n{body} }}")


def test_tabs_resume_one_refresh_at_a_time_and_share_the_token(page: Any) -> None:
    out = run(
        page,
        """
        const tabs = [new Session(), new Session(), new Session()];
        const entered = tabs.map(() => 0);
        tabs.forEach((t, i) => t.addEventListener('token', () => { entered[i] += 1; }));
        // three tabs opened at once (a browser restart): each resumes from the cookie
        const results = await Promise.all(tabs.map((t) => t.resume()));
        await until(() => tabs.every((t) => t.loggedIn));
        const o = { results, revoked: server.revoked, maxInFlight: server.maxInFlight,
          users: tabs.map((t) => t.username), entered: entered.every((n) => n >= 1) };
        // the token is in memory only: nothing in storage names it
        o.stored = JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage });
        o.tokens = tabs.map((t) => t.access);
        // a refresh ahead of expiry in every tab at the same moment: still one at a time
        const before = server.refreshes;
        await Promise.all(tabs.map((t) => t.refresh()));
        o.concurrent_refreshes = server.refreshes - before;
        o.revoked_after = server.revoked;
        o.maxInFlight_after = server.maxInFlight;
        return o;
        """,
    )
    assert out["results"] == ["ok", "ok", "ok"]
    assert out["revoked"] is False, "two tabs presented the same refresh token"
    assert out["maxInFlight"] == 1
    assert out["users"] == ["alice", "alice", "alice"]
    assert out["entered"] is True
    assert "at" not in out["stored"].replace("chat", ""), out["stored"]
    assert all(t and t.startswith("at") for t in out["tokens"])
    # the first tab's refresh is shared: the others adopt it (or refresh after it, in turn)
    assert 1 <= out["concurrent_refreshes"] <= 3
    assert out["revoked_after"] is False
    assert out["maxInFlight_after"] == 1


def test_logout_in_one_tab_ends_every_tab_and_a_login_signs_them_in(page: Any) -> None:
    out = run(
        page,
        """
        const a = new Session();
        const b = new Session();
        const ended = [];
        b.addEventListener('ended', (ev) => ended.push(ev.detail.why));
        await Promise.all([a.resume(), b.resume()]);
        const o = { b_token: Boolean(b.access) && b.access.startsWith('at') };
        const t0 = performance.now();
        await a.logout();
        await until(() => ended.length > 0);
        o.ms = performance.now() - t0;
        o.ended = ended;
        o.a = a.loggedIn;
        o.b = b.loggedIn;
        o.server_logout = server.logouts.length;
        o.pending = localStorage.getItem('chat.logout-pending.v1');
        // a new tab after the logout: no session
        const c = new Session();
        o.c = await c.resume();
        // a login in tab a signs in b (on its login screen)
        server.revoked = false;
        server.jar = 'rt-new';
        a.adoptLogin({ access_token: 'at-login', expires_in: 900, username: 'alice' }, 'alice');
        await until(() => b.loggedIn && c.loggedIn);
        o.after_login = [b.access, c.access];
        return o;
        """,
    )
    assert out["b_token"] is True
    assert out["ended"] == ["peer-logout"]
    assert out["ms"] < 1000
    assert out["a"] is False and out["b"] is False
    assert out["server_logout"] == 1
    assert out["pending"] is None
    assert out["c"] == "none"
    assert out["after_login"] == ["at-login", "at-login"]


def test_a_refresh_that_crosses_a_logout_signs_nobody_in(page: Any) -> None:
    out = run(
        page,
        """
        const a = new Session();
        const b = new Session();
        await Promise.all([a.resume(), b.resume()]);
        // b refreshes (the server has answered, the answer is on its way) when a logs out
        const refreshing = b.refresh();
        await until(() => server.inFlight === 1);
        await a.logout();
        const o = { refreshed: await refreshing };
        await new Promise((r) => setTimeout(r, 100)); // any late token message has arrived
        o.a = a.loggedIn;
        o.b = b.loggedIn;
        o.answered = server.n; // the server did hand out that token (it was not revoked yet)
        return o;
        """,
    )
    assert out["answered"] >= 2
    assert out["refreshed"] is False
    assert out["a"] is False and out["b"] is False


def test_a_logout_that_failed_is_sent_again_before_resuming(page: Any) -> None:
    out = run(
        page,
        """
        const a = new Session();
        await a.resume();
        const realFetch = window.fetch;
        window.fetch = async (url, init) => {
          if (url === '/api/auth/session/logout') throw new TypeError('offline');
          return realFetch(url, init);
        };
        await a.logout();
        const o = { pending: localStorage.getItem('chat.logout-pending.v1') };
        window.fetch = realFetch;
        const b = new Session(); // the next load: finish the logout, do not resume
        o.resumed = await b.resume();
        o.logged_in = b.loggedIn;
        o.server_logouts = server.logouts.length;
        o.pending_after = localStorage.getItem('chat.logout-pending.v1');
        o.refresh_after = await new Session().resume();
        return o;
        """,
    )
    assert out["pending"] == "1"
    assert out["resumed"] == "none" and out["logged_in"] is False
    assert out["server_logouts"] == 1
    assert out["pending_after"] is None
    assert out["refresh_after"] == "none"  # the cookie session is really gone


def test_old_token_storage_is_cleared_and_its_session_ended(page: Any) -> None:
    out = page.evaluate(
        """async () => {
          sessionStorage.setItem('chat.session.v1', JSON.stringify(
            { access: 'old-access', refresh: 'old-refresh', username: 'alice', expiresAt: 1 }));
          const calls = [];
          window.fetch = async (url, init = {}) => {
            calls.push([url, (init.headers || {}).Authorization || null]);
            return new Response(null, { status: 204 });
          };
          const { Session } = await import('/js/session.js?migrate');
          const s = new Session();
          await new Promise((r) => setTimeout(r, 20));
          return { left: sessionStorage.getItem('chat.session.v1'), calls, loggedIn: s.loggedIn };
        }"""
    )
    assert out["left"] is None
    assert ["/api/auth/logout", "Bearer old-access"] in out["calls"]
    assert out["loggedIn"] is False


READ_STATE = """
  const { countUnreadAfter, dividerBefore, isLooking, shouldNotify, notificationText, ReadSender }
    = await import('/js/readstate.js');
  const { Store } = await import('/js/store.js');
  const msg = (i, sender) => ({ id: 'm' + String(i).padStart(3, '0'), room: 'r1', sender,
    body: 'b' + i, sent_at: new Date(Date.UTC(2026, 0, 1, 10, 0, i)).toISOString() });
  const isMe = (u) => u === 'me';
  // m000..m009: me, bob, bob, me, bob, carol, me, bob, bob, carol
  const senders = ['me', 'bob', 'bob', 'me', 'bob', 'carol', 'me', 'bob', 'bob', 'carol'];
  const list = senders.map((s, i) => msg(i, s));
"""


def test_unread_count_and_the_new_messages_line(page: Any) -> None:
    out = page.evaluate(
        f"""async () => {{ {READ_STATE}
        const o = {{}};
        o.after3 = countUnreadAfter(list, 'm003', isMe, false);     // bob carol bob bob carol
        o.after9 = countUnreadAfter(list, 'm009', isMe, false);
        o.unknown = countUnreadAfter(list, 'x', isMe, false);       // not held: cannot tell
        o.none_part = countUnreadAfter(list, null, isMe, false);    // never read, history partial
        o.none_whole = countUnreadAfter(list, null, isMe, true);    // never read, all held
        o.div_held = dividerBefore(list, 'm005', 9, isMe);          // m006 is mine: m007
        o.div_read_all = dividerBefore(list, 'm009', 0, isMe);
        o.div_own_after = dividerBefore(list.slice(0, 7), 'm005', 0, isMe); // only mine after
        o.div_count = dividerBefore(list, 'x', 3, isMe);            // 3rd from the end: m007
        o.div_more = dividerBefore(list, null, 50, isMe);           // top of what is held
        o.div_zero = dividerBefore(list, null, 0, isMe);
        o.div_empty = dividerBefore([], null, 4, isMe);
        return o;
        }}"""
    )
    assert out["after3"] == 5
    assert out["after9"] == 0
    assert out["unknown"] is None
    assert out["none_part"] is None
    assert out["none_whole"] == 7
    assert out["div_held"] == "m007"
    assert out["div_read_all"] is None
    assert out["div_own_after"] is None
    assert out["div_count"] == "m007"
    assert out["div_more"] == "m000"
    assert out["div_zero"] is None
    assert out["div_empty"] is None


def test_store_read_state_from_the_server_and_other_devices(page: Any) -> None:
    out = page.evaluate(
        f"""async () => {{ {READ_STATE}
        const st = new Store();
        st.me = {{ id: 'u0', username: 'me' }};
        const room = (id, extra) => ({{ id, kind: 'direct', members: ['me', id === 'r1' ? 'bob' : 'dan'],
          member_count: 2, ...extra }});
        // the server's counts at `ready`
        st.setRooms([room('r1', {{ unread: 7, last_read: 'm900', muted: false }}),
          room('r2', {{ unread: 4, last_read: null, muted: true }})]);
        const o = {{ r1: st.rs('r1').unread, r2: st.rs('r2').unread, title: st.totalUnread(),
          muted: st.isMuted('r2') }};
        // an object without the fields (a `joined` frame) leaves them as they are
        st.upsertRoom(room('r1'));
        o.kept = [st.rs('r1').unread, st.rs('r1').lastRead];
        // one room fetched while connected: the server's count may lag its history writer
        st.upsertRoom(room('r1', {{ unread: 2, last_read: 'm100', muted: false }}));
        o.lagging = [st.rs('r1').unread, st.rs('r1').lastRead];
        st.upsertRoom(room('r1', {{ unread: 9, last_read: 'm100', muted: false }}));
        o.more = st.rs('r1').unread;
        st.setRooms([room('r1', {{ unread: 7, last_read: 'm900', muted: false }}),
          room('r2', {{ unread: 4, last_read: null, muted: true }})]); // `ready` again: its word
        o.snapshot = st.rs('r1').unread;
        // the history of r1 arrives and holds the last read message: counted exactly
        st.merge('r1', list);
        st.rs('r1').loaded = true;
        st.setRead('r1', 'm003');
        o.read3 = st.rs('r1').unread;
        o.backwards = st.setRead('r1', 'm001'); // behind what we know: ignored
        o.still3 = st.rs('r1').lastRead;
        st.setRead('r1', 'm009');               // read on another device, up to the newest
        o.read9 = st.rs('r1').unread;
        st.setRead('r1', 'm777');               // a position we do not hold: all read
        o.unheld = [st.rs('r1').unread, st.rs('r1').lastRead];
        // the line for a room being opened
        st.rs('r1').lastRead = 'm005';
        st.recount('r1');
        st.placeDivider('r1');
        o.divider = st.rs('r1').divider;
        o.title_after = st.totalUnread();
        return o;
        }}"""
    )
    assert out["r1"] == 7 and out["r2"] == 4
    assert out["title"] == 7  # a muted room is not in the title's count
    assert out["muted"] is True
    assert out["kept"] == [7, "m900"]
    assert out["lagging"] == [7, "m900"]
    assert out["more"] == 9
    assert out["snapshot"] == 7
    assert out["read3"] == 5
    assert out["backwards"] is False and out["still3"] == "m003"
    assert out["read9"] == 0
    assert out["unheld"] == [0, "m777"]
    assert out["divider"] == "m007"
    assert out["title_after"] == 3  # m007 m008 m009


def test_who_is_online_is_unknown_while_disconnected(page: Any) -> None:
    out = page.evaluate(
        """async () => {
        const { Store } = await import('/js/store.js');
        const st = new Store();
        st.me = { id: 'u0', username: 'me' };
        st.setRooms([
          { id: 'd1', kind: 'direct', members: ['me', 'bob'], member_count: 2 },
          { id: 'g1', kind: 'group', name: 'g', owner: 'me', members: ['me', 'carol', 'dan'],
            member_count: 3 },
          { id: 'big', kind: 'group', name: 'big', owner: 'x', member_count: 5000 },
        ]);
        st.online = new Set(['bob', 'carol', 'zed']); // zed: a big group's member (presence_sub)
        const o = { before_ready: st.onlineContacts() };
        st.presenceKnown = true;
        o.known = st.onlineContacts();
        st.applyPresenceFrame({ changes: [{ username: 'dan', online: true },
          { username: 'bob', online: false }] });
        o.after_frame = st.onlineContacts();
        st.presenceLost();
        o.lost = st.onlineContacts();
        o.online_after_loss = [...st.online];
        // an answer to a presence fetch made before the loss changes nothing
        st.noteFetchedPresence([{ username: 'carol', online: true }], 0);
        o.fetched_while_down = [...st.online];
        return o;
        }"""
    )
    assert out["before_ready"] == []
    assert out["known"] == ["bob", "carol"]
    assert out["after_frame"] == ["carol", "dan"]
    assert out["lost"] == []
    assert out["online_after_loss"] == []
    assert out["fetched_while_down"] == []


def test_when_to_read_and_when_to_notify(page: Any) -> None:
    out = page.evaluate(
        f"""async () => {{ {READ_STATE}
        const base = {{ active: 'r1', roomId: 'r1', loaded: true, visible: true, atBottom: true }};
        const o = {{}};
        o.looking = isLooking(base);
        o.hidden = isLooking({{ ...base, visible: false }});
        o.scrolled_up = isLooking({{ ...base, atBottom: false }});
        o.other_room = isLooking({{ ...base, active: 'r2' }});
        o.loading = isLooking({{ ...base, loaded: 'loading' }});
        const ctx = {{ enabled: true, isMe, muted: new Set(['r9']), lookingAt: new Set(['r2']) }};
        const m = (room, sender, extra) => ({{ id: 'x', room, sender, body: 'hi', ...extra }});
        o.n_other_room = shouldNotify(m('r1', 'bob'), ctx);
        o.n_looked_at = shouldNotify(m('r2', 'bob'), ctx);
        o.n_own = shouldNotify(m('r1', 'me'), ctx);
        o.n_muted = shouldNotify(m('r9', 'bob'), ctx);
        o.n_off = shouldNotify(m('r1', 'bob'), {{ ...ctx, enabled: false }});
        o.n_notice = shouldNotify(m('r1', 'bob', {{ kind: 'notice', body: null }}), ctx);
        o.text_dm = notificationText(m('r1', 'bob'), 'bob', true);
        o.text_group = notificationText({{ ...m('r1', 'bob'), body: '😀'.repeat(300) }}, 'Team', false);
        o.text_group_len = [...o.text_group.body].length;
        // reads: the newest per room, at most one per room per interval
        const sent = [];
        const rs = new ReadSender((room, id) => {{ sent.push([room, id]); }}, 100);
        rs.mark('r1', 'a'); rs.mark('r1', 'b'); rs.mark('r1', 'c'); rs.mark('r2', 'z');
        o.at_once = [...sent];
        await new Promise((r) => setTimeout(r, 180));
        o.later = [...sent];
        return o;
        }}"""
    )
    assert out["looking"] is True
    assert not any(out[k] for k in ("hidden", "scrolled_up", "other_room", "loading"))
    assert out["n_other_room"] is True
    assert not any(out[k] for k in ("n_looked_at", "n_own", "n_muted", "n_off", "n_notice"))
    assert out["text_dm"] == {"title": "bob", "body": "hi"}
    assert out["text_group"]["title"] == "bob in Team"
    assert out["text_group_len"] == 180 and out["text_group"]["body"].endswith("…")
    assert out["at_once"] == [["r1", "a"], ["r2", "z"]]
    assert out["later"] == [["r1", "a"], ["r2", "z"], ["r1", "c"]]


def test_only_one_tab_notifies_and_not_when_another_shows_the_room(page: Any) -> None:
    out = page.evaluate(
        """async () => {
        const shown = [];
        window.Notification = class {
          static permission = 'granted';
          static async requestPermission() { return 'granted'; }
          constructor(title, opts) { shown.push([title, opts.tag]); }
          close() {}
        };
        const { Notifier } = await import('/js/notify.js');
        const views = [{ room: 'r1', visible: false }, { room: 'r2', visible: true }];
        const tabs = views.map((v) => new Notifier({ view: () => v }));
        tabs.forEach((t) => t.start());
        const until = async (cond) => {
          for (let i = 0; i < 400 && !cond(); i += 1) await new Promise((r) => setTimeout(r, 5));
        };
        await until(() => tabs.some((t) => t.leader) && tabs.every((t) => t.views.size === 1));
        const ctx = { roomName: 'x', isDirect: true, isMe: (u) => u === 'me', muted: new Set() };
        const msg = (id, room) => ({ id, room, sender: 'bob', body: 'hi' });
        const o = { leaders: tabs.filter((t) => t.leader).length };
        for (const t of tabs) t.consider(msg('m1', 'r1'), ctx);  // nobody looks at r1
        for (const t of tabs) t.consider(msg('m2', 'r2'), ctx);  // the second tab shows r2
        o.shown = [...shown];
        // the leader closes: the other tab takes over
        const leader = tabs.find((t) => t.leader);
        leader.stop();
        await until(() => tabs.some((t) => t !== leader && t.leader));
        o.took_over = tabs.some((t) => t !== leader && t.leader);
        return o;
        }"""
    )
    assert out["leaders"] == 1
    assert out["shown"] == [["bob", "chat-m1"]]
    assert out["took_over"] is True
