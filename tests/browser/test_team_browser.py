"""The chat a team keeps open all day, end to end in headless Chromium against the scaled mode
behind nginx (`cluster_url`): unread counts from the server (they survive a reload and a new
login, and clear when read on another device), the "New messages" line and the "jump to
newest" marker, desktop notifications (for a hidden tab, not for a muted room, never asked
for on load), the live "Online" list (unknown while the page's own connection is down), and
finding people by the start of their username.

Every wait is a condition with a deadline (Playwright's expect), never a fixed sleep. The
tab and its helpers are tests/browser/test_chat_browser.py's."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.browser.test_chat_browser import WAIT_MS, Tab, _expect, open_tab, uname

pytestmark = [pytest.mark.browser, pytest.mark.scaled]


def title(tab: Tab) -> str:
    text: str = tab.page.evaluate("() => document.title")
    return text


def expect_title(tab: Tab, text: str) -> None:
    tab.page.wait_for_function("(t) => document.title === t", arg=text, timeout=WAIT_MS)


def body_after_divider(tab: Tab) -> str | None:
    text: str | None = tab.page.evaluate(
        """() => {
          let n = document.querySelector('#messages [data-testid=new-divider]');
          while (n && !(n.dataset && n.dataset.msgId)) n = n.nextElementSibling;
          return n ? n.querySelector('.msg-body').textContent : null;
        }"""
    )
    return text


def test_unread_counts_survive_reload_and_login_and_clear_on_another_device(
    browser: Any, cluster_url: str, tabs: list[Tab]
) -> None:
    expect = _expect()
    alice = open_tab(tabs, browser, cluster_url)
    bob = open_tab(tabs, browser, cluster_url)
    a_name, b_name = uname("alice"), uname("bob")
    alice.register(a_name)
    bob.register(b_name)
    room = bob.open_dm(a_name)
    for text in ("one", "two", "three"):
        bob.send(text)
    bob.expect_bodies(["one", "two", "three"])

    # alice has no conversation open: three unread, in the badge and the title
    expect(alice.badge(room)).to_have_text("3")
    expect_title(alice, "(3) Chat")

    # a reload: the count comes from the server
    alice.page.reload()
    alice.expect_online()
    expect(alice.badge(room)).to_have_text("3")
    expect_title(alice, "(3) Chat")

    # a new login in another browser: the same count
    other = open_tab(tabs, browser, cluster_url)
    other.login(a_name)
    expect(other.badge(room)).to_have_text("3")
    expect_title(other, "(3) Chat")

    # read there: the line sits above the first unread message, and the first browser's
    # badge and title clear (the `read` frame)
    other.open_room(room)
    other.expect_bodies(["one", "two", "three"])
    assert body_after_divider(other) == "one"
    expect(other.badge(room)).to_be_hidden()
    expect(alice.badge(room)).to_be_hidden()
    expect_title(alice, "Chat")
    other.hide()  # from now on the other device is not looking at the room
    alice.page.reload()
    alice.expect_online()
    expect(alice.page.locator(f'[data-room-id="{room}"]')).to_be_visible()
    expect(alice.badge(room)).to_be_hidden()
    assert title(alice) == "Chat"

    # alice reads in the first browser, then hides the tab: what comes meanwhile is unread
    # (title and badge), and the line marks where she left off when she comes back
    alice.open_room(room)
    alice.expect_bodies(["one", "two", "three"])
    expect(alice.page.locator("#messages [data-testid=new-divider]")).to_have_count(0)
    alice.hide()
    bob.send("four")
    bob.send("five")
    alice.expect_bodies(["one", "two", "three", "four", "five"])
    expect(alice.badge(room)).to_have_text("2")
    expect_title(alice, "(2) Chat")
    expect(other.badge(room)).to_have_text("2")
    alice.hide(False)
    expect(alice.badge(room)).to_be_hidden()
    expect_title(alice, "Chat")
    assert body_after_divider(alice) == "four"
    expect(other.badge(room)).to_be_hidden()  # read on alice's other device

    # after a reload that holds the last read message (the room reopens), counted exactly
    other.page.reload()
    other.expect_online()
    other.expect_bodies(["one", "two", "three", "four", "five"])
    expect(other.badge(room)).to_be_hidden()
    other.hide()
    alice.hide()
    bob.send("six")
    expect(other.badge(room)).to_have_text("1")
    expect(alice.badge(room)).to_have_text("1")
    expect_title(other, "(1) Chat")
    alice.hide(False)
    expect(alice.badge(room)).to_be_hidden()
    expect(other.badge(room)).to_be_hidden()
    expect_title(other, "Chat")
    for t in (alice, bob, other):
        t.assert_clean()


def test_jump_to_newest_when_scrolled_up(browser: Any, cluster_url: str, tabs: list[Tab]) -> None:
    expect = _expect()
    alice = open_tab(tabs, browser, cluster_url, viewport={"width": 1100, "height": 560})
    bob = open_tab(tabs, browser, cluster_url)
    a_name, b_name = uname("alice"), uname("bob")
    alice.register(a_name)
    bob.register(b_name)
    room = bob.open_dm(a_name)
    bodies = [f"line {i}" for i in range(24)]
    for text in bodies:
        bob.send(text)
    bob.expect_bodies(bodies)
    alice.open_room(room)
    alice.expect_bodies(bodies)
    # more unread than fit: the view opens at the line, and they stay unread until seen
    assert body_after_divider(alice) == "line 0"
    line_top = alice.page.eval_on_selector(
        "#messages",
        "(el) => el.querySelector('[data-testid=new-divider]').offsetTop - el.scrollTop",
    )
    assert 0 <= line_top < 60, line_top
    jump = alice.page.locator("#jump-newest")
    expect(jump).to_have_text("24 new messages ↓")
    expect(alice.badge(room)).to_have_text("24")
    jump.click()
    expect(alice.badge(room)).to_be_hidden()
    expect(jump).to_be_hidden()

    # scrolled up to the top: a new message is not read, and the marker says so
    alice.page.eval_on_selector("#messages", "(el) => { el.scrollTop = 0; }")
    bob.send("news")
    alice.expect_bodies([*bodies, "news"])
    expect(jump).to_be_visible()
    expect(jump).to_have_text("1 new message ↓")
    expect(alice.badge(room)).to_have_text("1")
    bob.send("more news")
    expect(jump).to_have_text("2 new messages ↓")
    # the jump: at the bottom, read, the marker gone
    jump.click()
    expect(jump).to_be_hidden()
    expect(alice.badge(room)).to_be_hidden()
    at_bottom = alice.page.eval_on_selector(
        "#messages", "(el) => el.scrollHeight - el.scrollTop - el.clientHeight < 40"
    )
    assert at_bottom is True
    alice.assert_clean()
    bob.assert_clean()


def test_notifications_hidden_tab_muted_room_and_permission_on_click(
    browser: Any, cluster_url: str, tabs: list[Tab]
) -> None:
    expect = _expect()
    alice = open_tab(tabs, browser, cluster_url, permissions=["notifications"])
    bob = open_tab(tabs, browser, cluster_url)
    a_name, b_name = uname("alice"), uname("bob")
    alice.register(a_name)
    bob.register(b_name)
    button = alice.page.locator("#notify-btn")
    expect(button).to_have_attribute("data-state", "on")  # granted: on until turned off
    assert alice.page.evaluate("() => window.__permissionAsks") == 0

    # a conversation alice is not looking at: a notification, with the sender and the text
    room = bob.open_dm(a_name)
    bob.send("lunch at noon?")
    alice.page.wait_for_function("() => window.__notes.length === 1", timeout=WAIT_MS)
    assert alice.notes()[0]["title"] == b_name
    assert alice.notes()[0]["body"] == "lunch at noon?"

    # looking at it: none; her own messages: none
    alice.open_room(room)
    bob.send("seen at once")
    alice.expect_bodies(["lunch at noon?", "seen at once"])
    alice.send("sure")
    bob.expect_bodies(["lunch at noon?", "seen at once", "sure"])

    # the tab hidden: a notification although the room is open
    alice.hide()
    bob.send("<b>while hidden</b>")
    alice.page.wait_for_function("() => window.__notes.length === 2", timeout=WAIT_MS)
    assert alice.notes()[1]["body"] == "<b>while hidden</b>"
    expect_title(alice, "(1) Chat")
    alice.hide(False)
    expect_title(alice, "Chat")

    # muted (another device of alice's follows live): no notification, no title count
    other = open_tab(tabs, browser, cluster_url)
    other.login(a_name)
    other.open_room(room)
    other.hide()  # not reading there either
    mute = alice.page.locator("#mute-btn")
    expect(mute).to_have_attribute("aria-pressed", "false")
    mute.click()
    expect(mute).to_have_attribute("aria-pressed", "true")
    expect(other.page.locator("#mute-btn")).to_have_attribute("aria-pressed", "true")
    alice.hide()
    bob.send("muted news")
    expect(alice.badge(room)).to_have_text("1")
    expect(alice.page.locator(f'[data-room-id="{room}"][data-muted]')).to_have_count(1)
    assert title(alice) == "Chat"
    # unmuted again: the next message notifies
    alice.page.click("#mute-btn")
    expect(mute).to_have_attribute("aria-pressed", "false")
    expect(other.page.locator("#mute-btn")).to_have_attribute("aria-pressed", "false")
    bob.send("loud news")
    alice.page.wait_for_function("() => window.__notes.length === 3", timeout=WAIT_MS)
    assert [n["body"] for n in alice.notes()] == [
        "lunch at noon?",
        "<b>while hidden</b>",
        "loud news",
    ]
    # switched off with the button: none
    button.click()
    expect(button).to_have_attribute("data-state", "off")
    bob.send("quiet news")
    expect(alice.badge(room)).to_have_text("3")
    assert len(alice.notes()) == 3

    # a browser that has not granted the permission: asked on the click only
    carol = open_tab(tabs, browser, cluster_url)
    carol.register(uname("carol"))
    expect(carol.page.locator("#notify-btn")).to_have_attribute("data-state", "off")
    assert carol.page.evaluate("() => window.__permissionAsks") == 0
    carol.page.evaluate("() => { window.__permissionAnswer = 'granted'; }")  # the user says yes
    carol.page.click("#notify-btn")
    expect(carol.page.locator("#notify-btn")).to_have_attribute("data-state", "on")
    assert carol.page.evaluate("() => window.__permissionAsks") == 1
    # one who says no: the button says notifications are blocked (and cannot ask again)
    assert other.page.evaluate("() => window.__permissionAsks") == 0
    other.page.click("#notify-btn")
    expect(other.page.locator("#notify-btn")).to_have_attribute("data-state", "blocked")
    expect(other.page.locator("#notify-btn")).to_be_disabled()
    assert other.page.evaluate("() => window.__permissionAsks") == 1
    for t in (alice, bob, other, carol):
        t.assert_clean()


def online_names(tab: Tab) -> list[str]:
    names: list[str] = tab.page.eval_on_selector_all(
        "#online-list li[data-user]", "els => els.map((e) => e.dataset.user)"
    )
    return names


def expect_online_list(tab: Tab, names: list[str]) -> None:
    items = tab.page.locator("#online-list li[data-user]")
    _expect()(items).to_have_count(len(names))
    if names:
        _expect()(items).to_have_text(sorted(names))


class SocketSwitch:
    """The page's WebSocket through Playwright (`route_web_socket`): passed on to the server,
    until `down()` closes it and refuses new ones; `up()` lets them through again."""

    def __init__(self, page: Any) -> None:
        self.is_down = False
        self.routes: list[Any] = []
        page.route_web_socket("**/ws", self._route)

    def _route(self, ws: Any) -> None:
        if self.is_down:
            ws.close(code=1011, reason="test: network down")
            return
        ws.connect_to_server()
        self.routes.append(ws)

    def down(self) -> None:
        self.is_down = True
        for ws in self.routes:
            ws.close(code=1011, reason="test: network down")
        self.routes = []

    def up(self) -> None:
        self.is_down = False


def test_online_list_is_live_and_unknown_while_disconnected(
    browser: Any, cluster_url: str, tabs: list[Tab]
) -> None:
    expect = _expect()
    alice = open_tab(tabs, browser, cluster_url)
    switch = SocketSwitch(alice.page)
    bob = open_tab(tabs, browser, cluster_url)
    carol = open_tab(tabs, browser, cluster_url)
    a_name, b_name, c_name = uname("alice"), uname("bob"), uname("carol")
    alice.register(a_name)
    bob.register(b_name)
    carol.register(c_name)
    dm = alice.open_dm(b_name)
    alice.page.fill("#new-group-name", f"Team {secrets.token_hex(2)}")
    alice.page.fill("#new-group-members", c_name)
    alice.page.click("#new-group-btn")
    alice.active_room()
    expect_online_list(alice, [b_name, c_name])
    expect(alice.page.locator("#online-count")).to_have_text("2")

    # carol's browser closes: she leaves the list; she comes back on another: she is in it
    carol.close()
    tabs.remove(carol)
    expect_online_list(alice, [b_name])
    carol = open_tab(tabs, browser, cluster_url)
    carol.login(c_name)
    expect_online_list(alice, [b_name, c_name])
    # a click in the list opens the direct chat
    alice.page.click(f'#online-list [data-user="{b_name}"] button')
    expect(alice.page.locator("#room-pane")).to_have_attribute("data-active-room", dm)

    # alice's own connection is down: nobody is shown online (not a stale "online")
    switch.down()
    expect(alice.page.locator("#conn-state")).to_have_text("reconnecting")
    expect(alice.page.locator("#online-list")).to_have_attribute("data-state", "unknown")
    expect_online_list(alice, [])
    expect(alice.page.locator("#online-empty")).to_contain_text("unknown")
    expect(alice.page.locator(f'[data-room-id="{dm}"] .online-dot')).to_have_class(
        "online-dot unknown"
    )
    expect(alice.page.locator("#room-sub")).to_have_text("presence unknown")
    # bob leaves while alice cannot hear it; back online, the list is right
    bob.close()
    tabs.remove(bob)
    switch.up()
    alice.expect_online(40_000)
    expect(alice.page.locator("#online-list")).to_have_attribute("data-state", "known")
    expect_online_list(alice, [c_name])
    expect(alice.page.locator(f'[data-room-id="{dm}"] .online-dot')).to_have_class("online-dot")
    expect(alice.page.locator("#room-sub")).to_have_text("offline")
    alice.assert_clean()
    carol.assert_clean()


def test_find_people_by_the_start_of_a_username(
    browser: Any, cluster_url: str, tabs: list[Tab]
) -> None:
    expect = _expect()
    alice = open_tab(tabs, browser, cluster_url)
    bob = open_tab(tabs, browser, cluster_url)
    stem = f"pf{secrets.token_hex(3)}"
    a_name, b_name, b2_name = f"{stem}_alice", f"{stem}_bob", f"{stem}_bobby"
    alice.register(a_name)
    bob.register(b_name)
    Tab(browser, cluster_url).register(b2_name).close()
    p = alice.page
    results = p.locator("#people-results li[data-user]")

    # two characters: no search
    p.fill("#new-dm-input", stem[:2])
    expect(p.locator("#people-results")).to_be_hidden()
    # the start of a name: the people it fits, not me
    p.fill("#new-dm-input", f"{stem}_b")
    expect(results).to_have_count(2)
    expect(results).to_have_text([f"{b_name}Chat", f"{b2_name}Chat"])
    p.fill("#new-dm-input", stem)
    expect(results).to_have_count(2)  # alice herself is left out
    p.fill("#new-dm-input", f"{stem}_nobody")
    expect(p.locator("#people-results")).to_contain_text("Nobody")
    # typing on: the newest answer is the one shown; a click starts the direct chat
    p.fill("#new-dm-input", f"{stem}_bo")
    p.fill("#new-dm-input", f"{stem}_bobb")
    expect(results).to_have_count(1)
    p.fill("#new-dm-input", f"{stem}_bob")
    expect(results).to_have_count(2)
    p.click(f'#people-results [data-user="{b_name}"] button')
    expect(p.locator("#room-title")).to_have_text(b_name)
    expect(p.locator("#people-results")).to_be_hidden()
    expect(p.locator("#new-dm-input")).to_have_value("")
    room = alice.active_room()
    alice.send("found you")
    expect(bob.badge(room)).to_have_text("1")
    # Escape closes the list
    p.fill("#new-dm-input", f"{stem}_bob")
    expect(results).to_have_count(2)
    p.press("#new-dm-input", "Escape")
    expect(p.locator("#people-results")).to_be_hidden()
    alice.assert_clean()
    bob.assert_clean()
