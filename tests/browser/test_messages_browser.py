"""Messages people can fix and find, end to end in headless Chromium against the scaled mode
behind nginx (`cluster_url`): editing (from the menu and with the Up key) and deleting, seen
live by the other side and after a reload; notices of members added and removed; a rename
and `who_can_add` from the group settings; search results that open their conversation at
the message; links made clickable (and HTML shown as text); the conversation list's preview.

Every wait is a condition with a deadline (Playwright's expect), never a fixed sleep. The tab
and its helpers are tests/browser/test_chat_browser.py's."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from tests.browser.test_chat_browser import WAIT_MS, Tab, _expect, open_tab, uname

pytestmark = [pytest.mark.browser, pytest.mark.scaled]


def message(tab: Tab, body: str) -> Any:
    """The confirmed message whose body is `body` (exactly)."""
    return tab.page.locator("#messages [data-msg-id]").filter(
        has=tab.page.locator(".msg-body", has_text=body)
    )


def open_menu(tab: Tab, msg: Any) -> None:
    msg.hover()
    msg.locator("[data-menu]").click()
    _expect()(tab.page.locator(".msg-menu")).to_be_visible()


def notices(tab: Tab) -> Any:
    return tab.page.locator("#messages [data-testid=notice] .notice-text")


def search_until(tab: Tab, q: str, n: int) -> None:
    """Search for `q` until `n` results are listed (the history writer stores a message a
    moment after its ack: asked again, with a deadline)."""
    results = tab.page.locator("#search-results li[data-result-id]")
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        tab.page.fill("#search-input", q)
        tab.page.press("#search-input", "Enter")
        try:
            _expect()(results).to_have_count(n, timeout=2_000)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def make_group(tab: Tab, name: str, members: list[str]) -> str:
    tab.page.fill("#new-group-name", name)
    tab.page.fill("#new-group-members", ", ".join(members))
    tab.page.click("#new-group-btn")
    _expect()(tab.page.locator("#room-title")).to_have_text(name)
    return tab.active_room()


def test_edit_and_delete_seen_live_and_after_a_reload(
    browser: Any, cluster_url: str, tabs: list[Tab]
) -> None:
    expect = _expect()
    alice = open_tab(tabs, browser, cluster_url)
    bob = open_tab(tabs, browser, cluster_url)
    a_name, b_name = uname("alice"), uname("bob")
    alice.register(a_name)
    bob.register(b_name)
    room = alice.open_dm(b_name)
    alice.send("see you at 10")
    alice.send("the romo is booked")
    bob.open_room(room)
    bob.expect_bodies(["see you at 10", "the romo is booked"])

    # from the menu: Edit, a new text, Enter saves; bob sees it live with "(edited)"
    open_menu(alice, message(alice, "see you at 10"))
    alice.page.click(".msg-menu [data-action=edit]")
    box = alice.page.locator(".msg-edit-input")
    expect(box).to_be_focused()
    expect(box).to_have_value("see you at 10")
    box.fill("see you at 11")
    box.press("Enter")
    bob.expect_bodies(["see you at 11", "the romo is booked"])
    expect(message(bob, "see you at 11").locator(".msg-edited")).to_have_text("(edited)")
    expect(message(alice, "see you at 11").locator(".msg-edited")).to_have_text("(edited)")
    expect(alice.page.locator("#messages .changing")).to_have_count(0)  # acked

    # the Up key in the empty composer edits my last message; Escape cancels, Enter saves
    alice.page.click("#composer-input")
    alice.page.press("#composer-input", "ArrowUp")
    expect(box).to_be_focused()
    expect(box).to_have_value("the romo is booked")
    box.fill("never saved")
    box.press("Escape")
    expect(box).to_have_count(0)
    expect(alice.page.locator("#composer-input")).to_be_focused()
    alice.expect_bodies(["see you at 11", "the romo is booked"])
    alice.page.press("#composer-input", "ArrowUp")
    expect(box).to_have_value("the romo is booked")
    box.fill("the room is booked")
    box.press("Enter")
    bob.expect_bodies(["see you at 11", "the room is booked"])
    expect(message(bob, "the room is booked").locator(".msg-edited")).to_be_visible()

    # bob cannot edit or delete alice's messages: no menu on them
    expect(message(bob, "the room is booked").locator("[data-menu]")).to_have_count(0)

    # delete (asked once more): a tombstone on both sides, the text gone
    open_menu(alice, message(alice, "see you at 11"))
    alice.page.click(".msg-menu [data-action=delete]")
    alice.page.click("[data-action=confirm-delete]")
    for t in (alice, bob):
        t.expect_bodies(["message deleted", "the room is booked"])
        expect(t.page.locator("#messages [data-deleted] .msg-body.tombstone")).to_have_count(1)
        expect(t.page.locator("#messages", has_text="see you at 11")).to_have_count(0)
    # the last message is the conversation list's preview
    expect(bob.page.locator(f'[data-room-id="{room}"] .room-preview')).to_have_text(
        "the room is booked"
    )
    expect(bob.page.locator(f'[data-room-id="{room}"] .room-time')).not_to_be_empty()

    # from history too, after a reload
    bob.page.reload()
    bob.expect_online()
    bob.expect_bodies(["message deleted", "the room is booked"])
    expect(message(bob, "the room is booked").locator(".msg-edited")).to_be_visible()
    expect(bob.page.locator("#messages [data-deleted]")).to_have_count(1)
    open_menu(alice, message(alice, "the room is booked"))
    alice.page.click(".msg-menu [data-action=delete]")
    alice.page.click("[data-action=confirm-delete]")
    expect(bob.page.locator(f'[data-room-id="{room}"] .room-preview')).to_have_text(
        "message deleted"
    )
    for t in (alice, bob):
        t.assert_clean()


class FrameFilter:
    """The page's WebSocket through Playwright, passing every frame on except the server's
    `room` `updated` frames while `drop_updates` is set (a member whose client missed a change
    of the group: its state is stale, as after a lost frame)."""

    def __init__(self, page: Any) -> None:
        self.drop_updates = False
        self.dropped = 0
        page.route_web_socket("**/ws", self._route)

    def _route(self, ws: Any) -> None:
        server = ws.connect_to_server()

        def from_server(message: str | bytes) -> None:
            if self.drop_updates and isinstance(message, str):
                try:
                    frame = json.loads(message)
                except ValueError:
                    frame = None
                if isinstance(frame, dict) and frame.get("type") == "room":
                    if frame.get("event") == "updated":
                        self.dropped += 1
                        return
            ws.send(message)

        server.on_message(from_server)


def test_notices_rename_and_who_can_add(browser: Any, cluster_url: str, tabs: list[Tab]) -> None:
    expect = _expect()
    alice = open_tab(tabs, browser, cluster_url)
    bob = open_tab(tabs, browser, cluster_url)
    filt = FrameFilter(bob.page)  # bob's socket is made at his login, through the route
    tag = secrets.token_hex(2)
    a_name, b_name, c_name, d_name = (f"{p}_{tag}" for p in ("alice", "bob", "carol", "dave"))
    alice.register(a_name)
    bob.register(b_name)
    for name in (c_name, d_name):
        open_tab(tabs, browser, cluster_url).register(name)
    group = f"Ops {tag}"
    room = make_group(alice, group, [b_name])
    alice.send("hello team")
    bob.open_room(room)
    bob.expect_bodies(["hello team"])
    expect(notices(bob)).to_have_text([f"{a_name} created the group"])

    # a member added, then removed: a notice each, in order, live
    alice.page.fill("#add-member-input", c_name)
    alice.page.click("#add-member-btn")
    expect(notices(bob)).to_have_text([f"{a_name} created the group", f"{a_name} added {c_name}"])
    alice.page.click(f'[data-remove-member="{c_name}"]')
    expect(notices(bob)).to_have_text(
        [f"{a_name} created the group", f"{a_name} added {c_name}", f"{a_name} removed {c_name}"]
    )
    expect(bob.page.locator(f'[data-room-id="{room}"] .room-preview')).to_have_text(
        f"{a_name} removed {c_name}"
    )
    # notices are not messages: not unread, and the bodies are unchanged
    bob.expect_bodies(["hello team"])

    # the settings: read-only for bob, editable for the owner
    bob.page.click("#settings-btn")
    expect(bob.page.locator("#group-name-input")).to_have_attribute("readonly", "")
    expect(bob.page.locator("#who-can-add")).to_be_disabled()
    expect(bob.page.locator("#settings-save")).to_be_hidden()
    expect(bob.page.locator("#settings-note")).to_contain_text("Only the owner")
    alice.page.click("#settings-btn")
    expect(alice.page.locator("#settings-save")).to_be_visible()
    renamed = f"Ops & <b>friends</b> {tag}"
    alice.page.fill("#group-name-input", renamed)
    alice.page.click("#settings-save")
    expect(bob.page.locator("#room-title")).to_have_text(renamed)
    expect(bob.page.locator(f'[data-room-id="{room}"] .room-name')).to_have_text(renamed)
    expect(notices(bob).last).to_have_text(f"{a_name} renamed the group to {renamed}")
    expect(bob.page.locator("#group-name-input")).to_have_value(renamed)
    expect(bob.page.locator("#messages b")).to_have_count(0)

    # who_can_add: owner. Bob's client misses the change (its `updated` frame is dropped): the
    # form is still there, and the server's 403 is shown clearly; the room is read again and
    # the form goes away
    expect(bob.page.locator("#add-member-form")).to_be_visible()
    filt.drop_updates = True
    alice.page.select_option("#who-can-add", "owner")
    alice.page.click("#settings-save")
    expect(alice.page.locator("#settings-note")).to_have_text("Saved.")
    bob.page.fill("#add-member-input", d_name)
    bob.page.click("#add-member-btn")
    expect(bob.page.locator("#error-banner")).to_be_visible()
    expect(bob.page.locator("#error-text")).to_have_text(
        f"Only the owner ({a_name}) can add members to this group."
    )
    expect(bob.page.locator("#add-member-form")).to_be_hidden()
    expect(bob.page.locator("#add-member-note")).to_have_text(
        f"Only the owner ({a_name}) can add members to this group."
    )
    expect(bob.page.locator(f'#member-list [data-member="{d_name}"]')).to_have_count(0)
    assert filt.dropped >= 1
    expect(bob.page.locator("#who-can-add")).to_have_value("owner")
    # live when the frame is not lost: back to members, bob's form comes back
    filt.drop_updates = False
    alice.page.select_option("#who-can-add", "members")
    alice.page.click("#settings-save")
    expect(bob.page.locator("#add-member-form")).to_be_visible()
    expect(bob.page.locator("#add-member-note")).to_be_hidden()

    # a group's owner may delete anyone's message: a tombstone for both
    bob.send("a message bob regrets")
    alice.expect_bodies(["hello team", "a message bob regrets"])
    open_menu(alice, message(alice, "a message bob regrets"))
    expect(alice.page.locator(".msg-menu [data-action=edit]")).to_have_count(0)  # not hers
    alice.page.click(".msg-menu [data-action=delete]")
    alice.page.click("[data-action=confirm-delete]")
    for t in (alice, bob):
        t.expect_bodies(["hello team", "message deleted"])
    alice.assert_clean()
    bob.assert_clean()  # the 403 he got is a failed request in the console, not a page error


def test_search_opens_the_conversation_at_the_message(
    browser: Any, cluster_url: str, tabs: list[Tab]
) -> None:
    expect = _expect()
    alice = open_tab(tabs, browser, cluster_url)
    bob = open_tab(tabs, browser, cluster_url)
    a_name, b_name = uname("alice"), uname("bob")
    alice.register(a_name)
    bob.register(b_name)
    room = alice.open_dm(b_name)
    word = f"zebra{secrets.token_hex(3)}"
    bodies = [f"Xin chào các bạn, the {word} plan"]
    bodies += [f"filler {i}" for i in range(70)]
    bodies += [f"{word} again {i}" for i in range(22)]
    for text in bodies:
        alice.send(text)
    alice.expect_bodies(bodies)
    # bob's new page holds none of it
    bob.page.reload()
    bob.expect_online()
    expect(bob.page.locator("#messages [data-msg-id]")).to_have_count(0)

    # Vietnamese typed without its marks finds it; results newest first, 20 a page
    results = bob.page.locator("#search-results li[data-result-id]")
    search_until(bob, f"chao {word}", 1)
    first = results.first
    expect(first.locator(".result-sender")).to_have_text(a_name)
    expect(first.locator(".result-room")).to_have_text(a_name)
    expect(first.locator(".result-snippet")).to_have_text(bodies[0])
    expect(first.locator(".result-snippet mark").first).to_have_text("chào")
    search_until(bob, word, 20)
    expect(results.first.locator(".result-snippet")).to_have_text(f"{word} again 21")
    bob.page.click("#search-more")
    expect(results).to_have_count(23)
    expect(results.last.locator(".result-snippet")).to_have_text(bodies[0])
    expect(bob.page.locator("#search-more")).to_be_hidden()

    # the oldest result: its conversation opens at the message (history around=), highlighted
    # and in view; newer messages follow as the user scrolls, or at once by "Jump to present"
    results.last.locator("button").click()
    expect(bob.page.locator("#room-pane")).to_have_attribute("data-active-room", room)
    target = bob.page.locator("#messages .msg.highlight")
    expect(target).to_have_count(1)
    expect(target.locator(".msg-body")).to_have_text(bodies[0])
    expect(target).to_be_in_viewport()
    jump = bob.page.locator("#jump-newest")
    expect(jump).to_have_attribute("data-present", "1")
    count = bob.page.locator("#messages [data-msg-id]").count()
    assert count < len(bodies), count  # a window, not the whole conversation
    # a message that comes meanwhile is not shown after a gap; it is there at the present
    alice.send("news while bob reads the past")
    expect(bob.page.locator("#messages", has_text="news while bob reads the past")).to_have_count(0)
    jump.click()
    expect(bob.page.locator("#messages [data-msg-id] .msg-body").last).to_have_text(
        "news while bob reads the past"
    )
    expect(jump).not_to_have_attribute("data-present", "1")
    # scrolled up to the top again and again: the whole conversation, once each, no gap
    bob.page.wait_for_function(
        """(n) => { const el = document.getElementById('messages'); el.scrollTop = 0;
                    return el.querySelectorAll('[data-msg-id]').length === n; }""",
        arg=len(bodies) + 1,
        timeout=WAIT_MS,
    )
    bob.expect_bodies([*bodies, "news while bob reads the past"])

    # a search with no match says so; Escape closes the panel
    bob.page.fill("#search-input", f"nothing{secrets.token_hex(4)}")
    bob.page.press("#search-input", "Enter")
    expect(bob.page.locator("#search-status")).to_have_text("No messages found.")
    bob.page.press("#search-input", "Escape")
    expect(bob.page.locator("#search-panel")).to_be_hidden()
    for t in (alice, bob):
        t.assert_clean()


def test_links_are_clickable_and_html_stays_text(
    browser: Any, cluster_url: str, tabs: list[Tab]
) -> None:
    expect = _expect()
    alice = open_tab(tabs, browser, cluster_url)
    bob = open_tab(tabs, browser, cluster_url)
    a_name, b_name = uname("alice"), uname("bob")
    alice.register(a_name)
    bob.register(b_name)
    room = alice.open_dm(b_name)
    bob.open_room(room)
    bodies = [
        "the doc: https://example.org/docs?id=7&x=1. thanks",
        "<b>bold</b> and javascript:alert(1)",
        '<a href="https://evil.example">click</a>',
    ]
    for text in bodies:
        alice.send(text)
    for t in (alice, bob):
        t.expect_bodies(bodies)
        links = t.page.locator("#messages .msg-body a")
        expect(links).to_have_count(2)
        first = links.first
        expect(first).to_have_text("https://example.org/docs?id=7&x=1")
        expect(first).to_have_attribute("href", "https://example.org/docs?id=7&x=1")
        expect(first).to_have_attribute("rel", "noopener noreferrer")
        expect(first).to_have_attribute("target", "_blank")
        # the HTML in a body is text: no <b>, and the <a> typed is not a link to evil.example
        expect(t.page.locator("#messages b")).to_have_count(0)
        expect(links.nth(1)).to_have_attribute("href", "https://evil.example/")
        expect(links.nth(1)).to_have_text("https://evil.example")
        expect(message(t, "<b>bold</b> and javascript:alert(1)").locator("a")).to_have_count(0)
    # a click opens a new tab (the link's own page is not reached: no network needed)
    bob.context.route("https://example.org/**", lambda route: route.fulfill(body="ok"))
    with bob.context.expect_page() as popup:
        bob.page.locator("#messages .msg-body a").first.click()
    new_page = popup.value
    new_page.wait_for_load_state()
    assert new_page.url == "https://example.org/docs?id=7&x=1"
    assert new_page.evaluate("() => window.opener") is None
    new_page.close()
    for t in (alice, bob):
        t.assert_clean()
