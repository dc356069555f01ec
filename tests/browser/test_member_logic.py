"""The member list's logic (web/js/members.js, store.js) in Chromium, without a backend: the
page cache of a big group against a fake GET /api/rooms/{id}/members, the visible range and
the presence_sub list it gives, member_joined / member_left applied to room objects and to the
cache, and presence frames of both forms. tests/browser/test_big_room_browser.py runs the real
thing end to end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.browser

# A fake members API over a sorted list of usernames, paged by name like the real one.
FAKE = """
  const { MemberPages, PresenceSub, applyMemberEvent, hasMemberList, memberCount,
    subscriptionList, visibleRange, MAX_SUB } = await import('/js/members.js');
  const { Store } = await import('/js/store.js');
  const names = (n, p = 'u') => Array.from({ length: n }, (_, i) => p + String(i).padStart(4, '0'));
  const server = {
    list: [], calls: [], failNext: 0, delay: 1, holds: [],
    async page(after, limit) {
      this.calls.push({ after, limit });
      if (this.hold) await new Promise((r) => this.holds.push(r));
      await new Promise((r) => setTimeout(r, this.delay));
      if (this.failNext > 0) { this.failNext -= 1; throw new Error('503'); }
      const sorted = [...this.list].sort();
      const rest = after ? sorted.filter((u) => u > after) : sorted;
      const members = rest.slice(0, limit).map((u) => ({ username: u, online: u.endsWith('7') }));
      return { members, next: rest.length > limit ? members[members.length - 1].username : null };
    },
  };
  const settle = async (pages) => {
    for (let i = 0; i < 200 && pages.loading; i += 1) await new Promise((r) => setTimeout(r, 2));
  };
  const rows = (pages) => Array.from({ length: pages.total() }, (_, i) => pages.row(i));
  const shown = (pages) => rows(pages).map((r) => (r ? r.username : null));
"""


def run(page: Any, body: str) -> Any:
    return page.evaluate(f"async () => {{ {FAKE}\n{body} }}")


@pytest.fixture
def page(browser: Any, web_url: str) -> Iterator[Any]:
    context = browser.new_context()
    p = context.new_page()
    p.goto(web_url + "/")
    yield p
    context.close()


def test_visible_range_and_subscription_list(page: Any) -> None:
    out = run(
        page,
        """
        const o = {};
        o.top = visibleRange(0, 300, 30, 250, 5);          // rows 0..9 visible, 5 below
        o.middle = visibleRange(3000, 300, 30, 250, 5);    // rows 100..109
        o.partial = visibleRange(3015, 300, 30, 250, 0);   // half rows at both ends
        o.end = visibleRange(30 * 250, 300, 30, 250, 5);   // scrolled past the end: clamped
        o.hidden = visibleRange(0, 0, 30, 250, 5);
        o.empty = visibleRange(0, 300, 30, 0, 5);
        const rowAt = (i) => (i === 3 ? null : { username: i === 2 ? 'ME' : 'u' + (i % 7) });
        o.sub = subscriptionList(rowAt, 0, 9, (u) => u === 'me');
        const many = subscriptionList((i) => ({ username: 'x' + i }), 0, 999);
        o.many = [many.length, many[0], many[many.length - 1]];
        o.max = MAX_SUB;
        return o;
        """,
    )
    assert out["top"] == {"first": 0, "last": 14}
    assert out["middle"] == {"first": 95, "last": 114}
    assert out["partial"] == {"first": 100, "last": 110}
    assert out["end"] == {"first": 245, "last": 249}
    assert out["hidden"]["last"] < out["hidden"]["first"]
    assert out["empty"]["last"] < out["empty"]["first"]
    # rows not fetched yet and I are left out; each user once, in row order
    assert out["sub"] == ["u0", "u1", "u4", "u5", "u6", "u2"]
    assert out["many"] == [500, "x0", "x499"] and out["max"] == 500


def test_pages_are_fetched_as_rows_come_into_view_and_cached(page: Any) -> None:
    out = run(
        page,
        """
        server.list = names(250);
        let changes = 0;
        const pages = new MemberPages((a, l) => server.page(a, l), 250, () => { changes += 1; });
        const o = {};
        o.before = [pages.total(), pages.row(0)];
        pages.ensure(20); pages.ensure(30);     // one request in flight at a time
        await settle(pages);
        o.first = { calls: [...server.calls], loaded: pages.loaded, row0: pages.row(0),
          row99: pages.row(99).username, row100: pages.row(100) };
        pages.ensure(50);                       // cached: no request
        o.cached = server.calls.length;
        pages.ensure(240);                      // a jump: the rest of the chain in one request
        await settle(pages);
        o.jump = server.calls.slice(1);
        o.complete = [pages.complete, pages.loaded, pages.total()];
        o.all = JSON.stringify(shown(pages)) === JSON.stringify(server.list);
        pages.ensure(249);
        o.after_complete = server.calls.length;
        o.changes = changes;
        o.requests = pages.requests;
        return o;
        """,
    )
    assert out["before"] == [250, None]
    assert out["first"]["calls"] == [{"after": None, "limit": 100}]
    assert out["first"]["loaded"] == 100
    assert out["first"]["row0"] == {"username": "u0000", "online": False}
    assert out["first"]["row99"] == "u0099" and out["first"]["row100"] is None
    assert out["cached"] == 1
    assert out["jump"] == [{"after": "u0099", "limit": 200}]
    assert out["complete"] == [True, 250, 250]
    assert out["all"] is True
    assert out["after_complete"] == 2
    assert out["changes"] == 2 and out["requests"] == 2


def test_a_far_jump_is_fetched_in_pages_of_at_most_1000(page: Any) -> None:
    out = run(
        page,
        """
        server.list = names(3000);
        const pages = new MemberPages((a, l) => server.page(a, l), 3000);
        pages.ensure(2500);
        await settle(pages);
        return { calls: server.calls, loaded: pages.loaded, row: pages.row(2500).username };
        """,
    )
    assert [c["limit"] for c in out["calls"]] == [1000, 1000, 600]
    assert out["calls"][1]["after"] == "u0999" and out["calls"][2]["after"] == "u1999"
    assert out["loaded"] == 2600 and out["row"] == "u2500"


def test_a_join_or_leave_drops_the_pages_from_the_change_on_and_they_are_fetched_again(
    page: Any,
) -> None:
    out = run(
        page,
        """
        server.list = names(250);
        const pages = new MemberPages((a, l) => server.page(a, l), 250);
        pages.ensure(50);
        await settle(pages);
        pages.ensure(249);
        await settle(pages);                         // pages: [0..99], [100..249]
        const o = {};
        // u0150a joins (between u0150 and u0151): the second page goes, the first stays
        server.list.push('u0150a');
        pages.applyChange('u0150a', true, 251);
        o.join = { pages: pages.pages.length, loaded: pages.loaded, total: pages.total(),
          row151: pages.row(151), row152: pages.row(152).username, loading: pages.loading };
        const calls = server.calls.length;
        pages.ensure(160);                           // the list on screen asks again
        await settle(pages);
        o.refetch = server.calls.slice(calls);
        o.join_ok = JSON.stringify(shown(pages)) === JSON.stringify([...server.list].sort());
        // u0005 leaves: every page goes (the change is in the first)
        server.list = server.list.filter((u) => u !== 'u0005');
        pages.applyChange('u0005', false, 250);
        o.leave = { pages: pages.pages.length, row5: pages.row(5), total: pages.total() };
        pages.ensure(249);
        await settle(pages);
        o.leave_ok = JSON.stringify(shown(pages)) === JSON.stringify([...server.list].sort());
        // the same frame twice (our own REST answer and the frame): no double count
        pages.applyChange('u0005', false, 250);
        pages.ensure(249);
        await settle(pages);
        o.twice = [pages.total(), shown(pages).filter((u) => u === 'u0005').length];
        return o;
        """,
    )
    j = out["join"]
    assert j["pages"] == 1 and j["loaded"] == 100 and j["total"] == 251
    # until fetched again the rows stay on screen, patched, marked stale
    assert j["row151"] == {"username": "u0150a", "online": False, "stale": True}
    assert j["row152"] == "u0151"
    assert j["loading"] is False  # nothing is fetched until the list asks
    assert out["refetch"] == [{"after": "u0099", "limit": 100}]
    assert out["join_ok"] is True
    assert out["leave"] == {
        "pages": 0,
        "row5": {"username": "u0006", "online": False, "stale": True},
        "total": 250,
    }
    assert out["leave_ok"] is True
    assert out["twice"] == [250, 0]


def test_a_change_above_the_rows_on_screen_is_patched_in_without_fetching(page: Any) -> None:
    out = run(
        page,
        """
        server.list = names(250);
        const pages = new MemberPages((a, l) => server.page(a, l), 250);
        pages.ensure(50, 0);
        await settle(pages);
        pages.ensure(240, 200);                      // scrolled down: rows 200..240 on screen
        await settle(pages);                         // pages: [0..99], [100..249]
        const calls = server.calls.length;
        const o = {};
        server.list.push('u0010a');
        pages.applyChange('u0010a', true, 251);      // in the first page, above the screen
        o.join = { pages: pages.pages.length, loaded: pages.loaded, row11: pages.row(11),
          row201: pages.row(201).username, total: pages.total(), loading: pages.loading };
        server.list = server.list.filter((u) => u !== 'u0020');
        pages.applyChange('u0020', false, 250);
        o.leave = { loaded: pages.loaded, row21: pages.row(21).username };
        pages.ensure(249, 200);
        await settle(pages);
        o.calls = server.calls.length - calls;       // nothing fetched for either
        o.exact = JSON.stringify(shown(pages)) === JSON.stringify([...server.list].sort());
        server.list.push('u0205a');                  // on screen: that page is fetched again
        pages.applyChange('u0205a', true, 251);
        o.on_screen = { pages: pages.pages.length, loaded: pages.loaded };
        pages.ensure(249, 200);
        await settle(pages);
        o.exact_after = JSON.stringify(shown(pages)) === JSON.stringify([...server.list].sort());
        return o;
        """,
    )
    assert out["join"] == {
        "pages": 2,
        "loaded": 251,
        "row11": {"username": "u0010a", "online": False},
        "row201": "u0200",  # every row below moved down by one
        "total": 251,
        "loading": False,
    }
    assert out["leave"] == {"loaded": 250, "row21": "u0021"}  # u0020 was at 21
    assert out["calls"] == 0 and out["exact"] is True
    assert out["on_screen"] == {"pages": 1, "loaded": 100}  # +1 -1 in the first page
    assert out["exact_after"] is True


def test_a_page_in_flight_during_a_change_is_dropped(page: Any) -> None:
    out = run(
        page,
        """
        server.list = names(150);
        const pages = new MemberPages((a, l) => server.page(a, l), 150);
        server.hold = true;
        pages.ensure(10);
        await new Promise((r) => setTimeout(r, 5));  // the request is on its way
        server.list.push('u0000a');
        pages.applyChange('u0000a', true, 151);      // a join: that answer may predate it
        server.hold = false;
        server.holds.splice(0).forEach((r) => r());
        await new Promise((r) => setTimeout(r, 20));
        const dropped = pages.loaded === 0 && !pages.loading;
        pages.ensure(150);
        await settle(pages);
        return { dropped, ok: JSON.stringify(shown(pages)) === JSON.stringify([...server.list].sort()),
          total: pages.total(), calls: server.calls.length };
        """,
    )
    assert out == {"dropped": True, "ok": True, "total": 151, "calls": 2}


def test_random_changes_and_scrolling_end_with_the_servers_list(page: Any) -> None:
    """Property: whatever the joins, leaves and scrolling, once the list asks for every row
    again it shows exactly the server's list, once each, in order."""
    out = run(
        page,
        """
        let seed = 7; // mulberry32
        const rnd = (n) => {
          seed = (seed + 0x6d2b79f5) | 0;
          let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
          t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
          return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
        };
        const counts = [0, 0, 0, 0];
        server.list = names(400);
        const pages = new MemberPages((a, l) => server.page(a, l), 400, () => {}, { page: 50 });
        const bad = [];
        for (let step = 0; step < 150; step += 1) {
          const op = rnd(4);
          counts[op] += 1;
          if (op === 0) {
            const name = 'u' + String(rnd(500)).padStart(4, '0') + 'j' + step;
            server.list.push(name);
            pages.applyChange(name, true, server.list.length);
          } else if (op === 1 && server.list.length > 1) {
            const name = server.list[rnd(server.list.length)];
            server.list = server.list.filter((u) => u !== name);
            pages.applyChange(name, false, server.list.length);
          } else {
            const last = rnd(server.list.length);
            pages.ensure(last, Math.max(0, last - rnd(60)));  // rows on screen: first..last
          }
          if (rnd(3) === 0) await settle(pages);
          if (pages.total() < server.list.length - 1) bad.push(['total', step, pages.total()]);
        }
        pages.ensure(server.list.length + 10);
        await settle(pages);
        const want = [...server.list].sort();
        return { bad, same: JSON.stringify(shown(pages)) === JSON.stringify(want),
          total: pages.total(), n: want.length, stale: pages.stale.length, counts,
          requests: pages.requests };
        """,
    )
    assert out["bad"] == []
    assert out["same"] is True and out["total"] == out["n"]
    assert out["stale"] == 0
    assert min(out["counts"]) > 20 and out["requests"] > 20, out  # every kind of step, often


def test_a_failed_page_is_asked_again_later(page: Any) -> None:
    out = run(
        page,
        """
        server.list = names(120);
        let changes = 0;
        const pages = new MemberPages((a, l) => server.page(a, l), 120, () => { changes += 1; },
          { retryMs: 30 });
        server.failNext = 1;
        pages.ensure(5);
        await settle(pages);
        const failed = { error: Boolean(pages.error), loaded: pages.loaded, changes };
        pages.ensure(5);                             // too soon: waits for the retry time
        const soon = server.calls.length;
        await new Promise((r) => setTimeout(r, 60));
        await settle(pages);
        return { failed, soon, calls: server.calls.length, loaded: pages.loaded,
          error: pages.error };
        """,
    )
    assert out["failed"] == {"error": True, "loaded": 0, "changes": 1}
    assert out["soon"] == 1
    assert out["calls"] == 2 and out["loaded"] == 100 and out["error"] is None


def test_member_events_on_room_objects(page: Any) -> None:
    out = run(
        page,
        """
        const small = { id: 'r', kind: 'group', members: ['ann', 'bob'], member_count: 2 };
        const big = { id: 'b', kind: 'group', member_count: 250 };
        const hundred = { id: 'h', kind: 'group', members: names(100), member_count: 100 };
        const o = {};
        o.joined = applyMemberEvent(small, 'Cat', true, 3);
        o.left = applyMemberEvent(small, 'ann', false, 1);
        o.local = applyMemberEvent(small, 'bob', false);   // our own removal: count from the list
        o.grown = applyMemberEvent(hundred, 'zed', true, 101);   // over 100: the list goes
        o.missed = applyMemberEvent(small, 'dan', true, 4);      // the list misses someone
        o.big = applyMemberEvent(big, 'x', true, 251);
        o.has = [hasMemberList(small), hasMemberList(big), hasMemberList(o.grown),
          hasMemberList({ members: ['a'], member_count: 150 })];
        o.count = [memberCount(small), memberCount(big), memberCount({ members: ['a'] })];

        const store = new Store();
        store.me = { id: 'i', username: 'ann' };
        store.setRooms([small, big]);
        o.isMember = [store.isMember(small), store.isMember(big),
          store.isMember({ ...small, members: ['bob'] })];
        server.list = names(250);
        const pages = new MemberPages((a, l) => server.page(a, l), 250);
        store.memberPages.set('b', pages);
        pages.ensure(249);
        await settle(pages);
        server.list.push('u0000a');
        store.applyMemberEvent('b', 'u0000a', true, 251);
        o.store_big = [store.rooms.get('b').member_count, pages.loaded, pages.total()];
        store.applyMemberEvent('r', 'cat', true, 3);
        o.store_small = store.rooms.get('r');
        store.removeRoom('b');
        o.dropped = store.memberPages.has('b');
        return o;
        """,
    )
    assert out["joined"]["members"] == ["ann", "bob", "cat"] and out["joined"]["member_count"] == 3
    assert out["left"]["members"] == ["bob"] and out["left"]["member_count"] == 1
    assert out["local"]["members"] == ["ann"] and out["local"]["member_count"] == 1
    assert "members" not in out["grown"] and out["grown"]["member_count"] == 101
    assert "members" not in out["missed"] and out["missed"]["member_count"] == 4
    assert out["big"] == {"id": "b", "kind": "group", "member_count": 251}
    assert out["has"] == [True, False, False, False]
    assert out["count"] == [2, 250, 1]
    assert out["isMember"] == [True, True, False]  # a big group cannot say we are not in it
    assert out["store_big"] == [251, 0, 251]  # the change is in the first page: all refetched
    assert out["store_small"]["members"] == ["ann", "bob", "cat"]
    assert out["dropped"] is False


def test_presence_frames_of_both_forms_and_fetched_presence(page: Any) -> None:
    out = run(
        page,
        """
        const store = new Store();
        const o = {};
        store.applyPresenceFrame({ type: 'presence', username: 'Ann', online: true });
        store.applyPresenceFrame({ type: 'presence', changes: [
          { username: 'bob', online: true }, { username: 'cat', online: true },
          { username: 'ann', online: false }] });
        o.after_frames = [...store.online].sort();
        o.empty = store.applyPresenceFrame({ type: 'presence', changes: [] });
        // a page asked for before a frame about bob must not undo it
        const tick = store.presenceTick;
        store.applyPresenceFrame({ type: 'presence', username: 'bob', online: false });
        store.noteFetchedPresence([{ username: 'bob', online: true },
          { username: 'dan', online: true }, { username: 'cat', online: false }], tick);
        o.after_page = [...store.online].sort();
        return o;
        """,
    )
    assert out["after_frames"] == ["bob", "cat"]
    assert out["empty"] is False
    assert out["after_page"] == ["dan"]


def test_presence_sub_is_debounced_replaced_and_resent_after_a_reconnect(page: Any) -> None:
    out = run(
        page,
        """
        const sent = [];
        let connected = true;
        const sub = new PresenceSub((u) => { if (connected) sent.push(u); return connected; },
          { delayMs: 20 });
        const wait = (ms) => new Promise((r) => setTimeout(r, ms));
        const o = {};
        sub.want([]);                       // nothing subscribed yet: nothing to say
        o.idle = sent.length;
        sub.want(['a', 'B']); sub.want(['a', 'b', 'c']);   // scrolling: only the last one
        o.debounced = sent.length;
        await wait(50);
        o.one = [...sent];
        sub.want(['a', 'b', 'c']);          // the same again: nothing
        await wait(50);
        o.same = sent.length;
        sub.want([]);                       // the panel closed: at once
        o.closed = sent[sent.length - 1];
        sub.want(names(600));
        await wait(50);
        o.capped = sent[sent.length - 1].length;
        connected = false;                  // dropped: the next list waits for `ready`
        sub.want(['x']);
        await wait(50);
        const before = sent.length;
        connected = true;
        sub.onReady();
        o.resent = [before, sent[sent.length - 1]];
        sub.onReady();                      // every new connection gets it again
        o.again = sent.length - before;
        return o;
        """,
    )
    assert out["idle"] == 0
    assert out["debounced"] == 0
    assert out["one"] == [["a", "b", "c"]]
    assert out["same"] == 1
    assert out["closed"] == []
    assert out["capped"] == 500
    assert out["resent"][1] == ["x"]
    assert out["again"] == 2
