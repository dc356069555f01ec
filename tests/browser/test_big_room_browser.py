"""A group of 250 in real headless Chromium, in both run modes (the scaled one behind nginx):
the header shows the member count, the member list is paged and virtual (rows load by page as
it scrolls, never all 250 in the DOM), a member who comes online turns online in the visible
rows (presence_sub: members of a group over 100 are not contacts), and members added and
removed through the REST API change the count and the list live (member_joined/member_left).

The users are seeded straight into the database (tests/faults/seed.py); the group is created
and changed through the public API, and the viewer logs in through the page. Every wait is a
condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.browser.test_chat_browser import Tab, _expect
from tests.faults.seed import Seeded, Seeder
from tests.support import services as svc
from tests.support.client import PASSWORD, Stack, User, WsClient

pytestmark = pytest.mark.browser

GROUP = 250
ROW_PX = 30  # MEMBER_ROW_PX in web/js/ui.js
MAX_ROWS_IN_DOM = 80  # what is on screen plus the overscan, far below GROUP


@pytest.fixture
def site(stack: Stack) -> Stack:
    """`stack` (both modes), served to the browser from one origin."""
    if not stack.base_url:
        svc.missing("nginx is not installed (run `make setup-system`)")
    return stack


@pytest.fixture
def people(site: Stack) -> list[Seeded]:
    seeder = Seeder(site.extra["database_url"], site.extra["secret"])
    try:
        # "m..." sort after "a..." (the newcomers below) and before "z..." (the viewer)
        users = seeder.users(GROUP - 1, prefix="m")
        users += seeder.users(1, prefix="z")
        users += seeder.users(2, prefix="a")
    finally:
        seeder.close()
    return users


class Online:
    """A user connected over the WebSocket (tests.support.client.WsClient) from a thread of
    its own, so that the test's Playwright calls and this client's event loop do not mix."""

    def __init__(self, site: Stack, user: Seeded, gateway: int = 0) -> None:
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self._run(site, user, gateway)), daemon=True
        )
        self.thread.start()
        if not self.ready.wait(30):
            raise AssertionError(f"{user.username} could not connect: {self.error!r}")

    async def _run(self, site: Stack, user: Seeded, gateway: int) -> None:
        try:
            client = await WsClient.connect(
                site, User(user.username, user.id, user.access_token, ""), gateway=gateway
            )
        except BaseException as exc:
            self.error = exc
            return
        self.ready.set()
        while not self.stop.is_set():
            try:  # keep reading (the server's pings are answered by websockets)
                await client.recv(timeout=0.2)
            except TimeoutError:
                continue
            except Exception:
                break
        await client.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)


def wait_until(page: Any, cond: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll a condition that Playwright's callbacks (a route's) make true: they run only while
    the test is inside a Playwright call, hence the short waits in the page between checks."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        page.wait_for_timeout(50)


def login(tab: Tab, user: Seeded) -> None:
    p = tab.page
    tab.username = user.username
    p.fill("#username", user.username)
    p.fill("#password", PASSWORD)
    p.click("#login-btn")
    tab.expect_online()
    _expect()(p.locator("#me")).to_have_text(user.username)


def rows(tab: Tab) -> list[str]:
    names: list[str] = tab.page.eval_on_selector_all(
        "#member-list li[data-member]", "els => els.map((e) => e.dataset.member)"
    )
    return names


def scroll_members(tab: Tab, top: int) -> None:
    tab.page.eval_on_selector("#member-list", "(el, top) => { el.scrollTop = top; }", top)


def row(tab: Tab, username: str) -> Any:
    return tab.page.locator(f'#member-list li[data-member="{username}"]')


def test_a_group_of_250_paged_virtual_live(
    browser: Any, site: Stack, people: list[Seeded], tabs: list[Tab]
) -> None:
    expect = _expect()
    members = people[:GROUP]
    owner, viewer = members[0], members[GROUP - 1]  # the viewer ("z...") sorts last
    newcomer, other_new = people[GROUP], people[GROUP + 1]  # "a...": they sort first
    ordered = sorted(m.username for m in members)
    assert ordered[-1] == viewer.username
    with httpx.Client(timeout=60) as http:
        r = http.post(
            site.url("/api/rooms"),
            json={"name": "Big group", "members": [m.username for m in members[1:]]},
            headers=owner.headers,
        )
        assert r.status_code == 201, r.text[:300]
        room = r.json()
        assert room["member_count"] == GROUP and "members" not in room

    tab = Tab(browser, site.base_url or "")
    tabs.append(tab)
    login(tab, viewer)
    tab.open_room(room["id"])
    page = tab.page
    lst = page.locator("#member-list")

    # the header and the panel show the count (the room object has no member list)
    expect(page.locator("#room-title")).to_have_text("Big group")
    expect(page.locator("#room-sub")).to_have_text(f"{GROUP} members")
    expect(page.locator("#member-count")).to_have_text(str(GROUP))

    # the first rows, from the first page; the scroll height stands for all 250
    expect(lst).to_have_class("virtual")
    expect(lst).to_have_attribute("data-total", str(GROUP))
    expect(row(tab, ordered[0])).to_be_visible()
    expect(lst).to_have_attribute("data-requests", "1")
    loaded = int(lst.get_attribute("data-loaded") or "0")
    assert 0 < loaded < GROUP, loaded  # one page, not the whole list
    first_rows = rows(tab)
    assert first_rows == ordered[: len(first_rows)], first_rows[:5]
    assert 0 < len(first_rows) <= MAX_ROWS_IN_DOM
    height = lst.evaluate("(el) => el.scrollHeight")
    assert abs(height - GROUP * ROW_PX) <= ROW_PX, height

    # presence_sub: the visible rows are subscribed; a member among them connects and turns
    # online here (not a contact: without the subscription nothing would tell us)
    expect(lst).to_have_attribute("data-presence-sub", str(len(first_rows)))
    target = next(m for m in members if m.username == ordered[2])
    dot = row(tab, target.username).locator(".online-dot")
    expect(dot).not_to_have_class("online-dot on")
    online = Online(site, target, gateway=1)
    try:
        expect(dot).to_have_class("online-dot on")
    finally:
        online.close()
    expect(dot).not_to_have_class("online-dot on")  # and offline again

    # scrolling down: the next rows come by page; the DOM keeps only the rows around the view
    scroll_members(tab, 120 * ROW_PX)
    expect(row(tab, ordered[125])).to_be_visible()
    expect(row(tab, ordered[0])).to_have_count(0)
    assert len(rows(tab)) <= MAX_ROWS_IN_DOM
    scroll_members(tab, GROUP * ROW_PX)  # the end
    me_row = row(tab, viewer.username)
    expect(me_row).to_be_visible()
    expect(me_row.locator(".tag")).to_have_text("you")
    requests = int(lst.get_attribute("data-requests") or "0")
    assert requests >= 2, requests
    assert len(rows(tab)) <= MAX_ROWS_IN_DOM
    expect(lst).to_have_attribute("data-loaded", str(GROUP))
    # the subscription follows the rows on screen (the viewer is not in it)
    on_screen = rows(tab)
    expect(lst).to_have_attribute("data-presence-sub", str(len(on_screen) - 1))

    # back to the top, then members added and removed through the API: count and rows live
    scroll_members(tab, 0)
    expect(row(tab, ordered[0])).to_be_visible()
    with httpx.Client(timeout=60) as http:
        r = http.post(
            site.url(f"/api/rooms/{room['id']}/members"),
            json={"username": newcomer.username},
            headers=owner.headers,
        )
        assert r.status_code == 200, r.text
        expect(page.locator("#room-sub")).to_have_text(f"{GROUP + 1} members")
        expect(page.locator("#member-count")).to_have_text(str(GROUP + 1))
        expect(row(tab, newcomer.username)).to_be_visible()  # sorts first: the top row
        expect(lst.locator("li[data-member]").first).to_have_attribute(
            "data-member", newcomer.username
        )
        expect(lst).to_have_attribute("data-total", str(GROUP + 1))

        gone = ordered[1]
        r = http.delete(site.url(f"/api/rooms/{room['id']}/members/{gone}"), headers=owner.headers)
        assert r.status_code == 204, r.text
        expect(page.locator("#room-sub")).to_have_text(f"{GROUP} members")
        expect(row(tab, gone)).to_have_count(0)
        r = http.delete(
            site.url(f"/api/rooms/{room['id']}/members/{newcomer.username}"),
            headers=newcomer.headers,  # leaves by themselves
        )
        assert r.status_code == 204, r.text
        expect(page.locator("#room-sub")).to_have_text(f"{GROUP - 1} members")
        expect(row(tab, newcomer.username)).to_have_count(0)
        # the rows on screen were fetched again: the server's order, nobody twice or missing
        want = [u for u in ordered if u != gone]
        page.wait_for_function(
            """(want) => {
                 const l = document.querySelector('#member-list');
                 const got = [...l.querySelectorAll('li[data-member]')].map((e) => e.dataset.member);
                 return l.querySelector('li.stale, li.placeholder') === null && got.length > 0
                   && JSON.stringify(got) === JSON.stringify(want.slice(0, got.length));
               }""",
            arg=want,
            timeout=20_000,
        )

        # the end of the list after the changes: still every member, once
        scroll_members(tab, GROUP * ROW_PX)
        expect(me_row).to_be_visible()
        expect(lst).to_have_attribute("data-loaded", str(GROUP - 1))

        # a member added while the list is scrolled away from them: the count follows
        adder = next(m for m in members[1:] if m.username != gone)
        r = http.post(
            site.url(f"/api/rooms/{room['id']}/members"),
            json={"username": other_new.username},
            headers=adder.headers,  # any member may add
        )
        assert r.status_code == 200, r.text
        expect(page.locator("#member-count")).to_have_text(str(GROUP))
        scroll_members(tab, 0)
        expect(row(tab, other_new.username)).to_be_visible()
    tab.assert_clean()


def test_phone_sized_member_panel_of_a_big_group(
    browser: Any, site: Stack, people: list[Seeded], tabs: list[Tab]
) -> None:
    """Below 1000 px the panel is behind the Members toggle: opened, it is a short scrolling
    list with the same paging; closed, the presence subscription is dropped."""
    expect = _expect()
    members = people[:GROUP]
    owner, viewer = members[0], members[GROUP - 1]
    with httpx.Client(timeout=60) as http:
        r = http.post(
            site.url("/api/rooms"),
            json={"name": "Phone group", "members": [m.username for m in members[1:]]},
            headers=owner.headers,
        )
        assert r.status_code == 201, r.text[:300]
        room = r.json()
    phone = {"width": 390, "height": 780}
    tab = Tab(browser, site.base_url or "", viewport=phone)
    tabs.append(tab)
    login(tab, viewer)
    page = tab.page
    tab.open_room(room["id"])  # no room open yet: the sidebar is shown
    expect(page.locator("#room-sub")).to_have_text(f"{GROUP} members")
    lst = page.locator("#member-list")
    expect(lst).to_be_hidden()  # behind the toggle
    page.click("#members-toggle")
    expect(lst).to_be_visible()
    ordered = sorted(m.username for m in members)
    expect(row(tab, ordered[0])).to_be_in_viewport()
    shown = rows(tab)
    assert 0 < len(shown) <= MAX_ROWS_IN_DOM
    expect(lst).to_have_attribute("data-presence-sub", str(len(shown)))
    box = lst.bounding_box()
    assert box is not None and box["height"] <= phone["height"] * 0.5, box
    scroll_members(tab, GROUP * ROW_PX)
    expect(row(tab, viewer.username)).to_be_in_viewport()
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= phone["width"], f"horizontal overflow: {width}px"
    # the composer is still there under the open panel
    expect(page.locator("#composer-input")).to_be_in_viewport()
    page.click("#members-toggle")
    expect(lst).to_be_hidden()
    expect(lst).to_have_attribute("data-presence-sub", "0")  # closed: presence_sub []
    tab.assert_clean()


def test_a_group_growing_past_100_turns_virtual(browser: Any, site: Stack, tabs: list[Tab]) -> None:
    """At 100 members the room object lists them and the panel shows them all (they are
    contacts); the 101st makes the list go (member_joined with member_count 101): the panel
    turns into the paged list, and stays one when the group shrinks again."""
    expect = _expect()
    seeder = Seeder(site.extra["database_url"], site.extra["secret"])
    try:
        members = seeder.users(100, prefix="s")
        extra = seeder.users(1, prefix="t")[0]
    finally:
        seeder.close()
    owner, viewer = members[0], members[1]
    with httpx.Client(timeout=60) as http:
        r = http.post(
            site.url("/api/rooms"),
            json={"name": "Hundred", "members": [m.username for m in members[1:]]},
            headers=owner.headers,
        )
        assert r.status_code == 201, r.text[:300]
        room = r.json()
        assert room["member_count"] == 100 and len(room["members"]) == 100

    tab = Tab(browser, site.base_url or "")
    tabs.append(tab)
    login(tab, viewer)
    tab.open_room(room["id"])
    page = tab.page
    lst = page.locator("#member-list")
    expect(page.locator("#room-sub")).to_have_text("100 members")
    expect(lst.locator("li[data-member]")).to_have_count(100)  # the whole list, no paging
    expect(lst).not_to_have_class("virtual")

    with httpx.Client(timeout=60) as http:
        r = http.post(
            site.url(f"/api/rooms/{room['id']}/members"),
            json={"username": extra.username},
            headers=owner.headers,
        )
        assert r.status_code == 200, r.text
        assert "members" not in r.json()
        expect(page.locator("#room-sub")).to_have_text("101 members")
        expect(lst).to_have_class("virtual")
        expect(lst).to_have_attribute("data-total", "101")
        ordered = sorted([m.username for m in members] + [extra.username])
        expect(row(tab, ordered[0])).to_be_visible()
        assert len(rows(tab)) < 101
        scroll_members(tab, 101 * ROW_PX)
        expect(row(tab, extra.username)).to_be_visible()  # "t..." sorts after every "s..."

        r = http.delete(
            site.url(f"/api/rooms/{room['id']}/members/{extra.username}"),
            headers=owner.headers,
        )
        assert r.status_code == 204, r.text
        expect(page.locator("#room-sub")).to_have_text("100 members")
        expect(row(tab, extra.username)).to_have_count(0)
        expect(lst).to_have_attribute("data-total", "100")
        expect(lst).to_have_attribute("data-loaded", "100")
    tab.assert_clean()


def test_frames_missed_while_away_are_made_up_after_the_reconnect(
    browser: Any, site: Stack, tabs: list[Tab]
) -> None:
    """The page's WebSocket goes through a Playwright route that can drop frames: a member_left
    is lost, then the connection closes. After the next `ready` the client fetches the rows
    on screen again (the removed member is gone) and sends its presence_sub again (a visible
    member who connects turns online)."""
    expect = _expect()
    seeder = Seeder(site.extra["database_url"], site.extra["secret"])
    try:
        members = seeder.users(150, prefix="r")
    finally:
        seeder.close()
    owner = members[0]
    ordered = sorted(m.username for m in members)
    viewer = next(m for m in members if m.username == ordered[-1])
    with httpx.Client(timeout=60) as http:
        r = http.post(
            site.url("/api/rooms"),
            json={"name": "Lossy", "members": [m.username for m in members[1:]]},
            headers=owner.headers,
        )
        assert r.status_code == 201, r.text[:300]
        room = r.json()

    tab = Tab(browser, site.base_url or "")
    tabs.append(tab)
    page = tab.page
    routes: list[Any] = []
    dropping = {"on": False, "dropped": 0}

    def is_member_frame(message: str | bytes) -> bool:
        try:
            f = json.loads(message)
        except ValueError:
            return False
        return f.get("type") == "room" and f.get("event") in ("member_joined", "member_left")

    def route(ws: Any) -> None:
        server = ws.connect_to_server()

        def to_page(message: str | bytes) -> None:
            if dropping["on"] and is_member_frame(message):
                dropping["dropped"] += 1
                return
            ws.send(message)

        server.on_message(to_page)
        routes.append((ws, server))

    page.route_web_socket("**/ws", route)
    login(tab, viewer)
    tab.open_room(room["id"])
    lst = page.locator("#member-list")
    gone = ordered[0]
    expect(row(tab, gone)).to_be_visible()
    expect(lst).to_have_attribute("data-presence-sub", str(len(rows(tab))))

    def reconnect() -> None:
        connects = int(page.get_attribute("#conn-state", "data-connects") or "0")
        ws, server = routes[-1]
        server.close()  # the gateway's side goes too (it would still get frames)
        ws.close(code=1012, reason="going away")  # the client reconnects at once
        page.wait_for_function(
            "(n) => Number(document.querySelector('#conn-state').dataset.connects) > n",
            arg=connects,
            timeout=30_000,
        )
        tab.expect_online()

    # a new connection has no presence_sub: the client sends it again, the same rows' users
    reconnect()
    target = next(m for m in members if m.username == ordered[3])
    dot = row(tab, target.username).locator(".online-dot")
    expect(dot).not_to_have_class("online-dot on")
    online = Online(site, target)
    try:
        expect(dot).to_have_class("online-dot on")
    finally:
        online.close()
    expect(dot).not_to_have_class("online-dot on")

    # a member_left is lost on the way
    dropping["on"] = True
    with httpx.Client(timeout=60) as http:
        r = http.delete(site.url(f"/api/rooms/{room['id']}/members/{gone}"), headers=owner.headers)
        assert r.status_code == 204, r.text
    wait_until(page, lambda: dropping["dropped"] > 0)
    assert dropping["dropped"] == 1, dropping
    expect(page.locator("#room-sub")).to_have_text("150 members")
    expect(row(tab, gone)).to_be_visible()
    # after the next `ready` the rows on screen are fetched again
    dropping["on"] = False
    reconnect()
    expect(page.locator("#room-sub")).to_have_text("149 members")  # `ready`'s room object
    expect(row(tab, gone)).to_have_count(0)
    expect(row(tab, ordered[1])).to_be_visible()
    expect(lst).to_have_attribute("data-total", "149")
    tab.assert_clean()
