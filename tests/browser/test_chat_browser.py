"""End-to-end tests of the web client in real headless Chromium (Debian's package, never a
downloaded browser) against the scaled mode behind nginx (`cluster_url`).

Every wait is a condition with a deadline (Playwright's expect / wait_for_function), never a
fixed sleep. Screenshots of the main screens go to a temporary directory, or to
CHAT_SCREENSHOTS_DIR when it is set: `make screenshots` refreshes docs/screenshots/ that way. A
test run never writes into the repository.
"""

from __future__ import annotations

import inspect
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.scaled]

PASSWORD = "Browser-test pass 7"
WAIT_MS = 20_000  # deadline for one UI condition
RECONNECT_MS = 40_000  # deadline for a reconnect after a gateway died
XSS = "<img src=x onerror=alert(1)>"

# Chromium reports this for the meta CSP (the servers send frame-ancestors as a header too).
IGNORED_CONSOLE = ("frame-ancestors' is ignored when delivered via a <meta> element",)


def _expect() -> Any:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    return expect


@pytest.fixture(scope="module", autouse=True)
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CHAT_SCREENSHOTS_DIR (``make screenshots``: docs/screenshots), else a temporary directory."""
    configured = os.environ.get("CHAT_SCREENSHOTS_DIR")
    where = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    where.mkdir(parents=True, exist_ok=True)
    Tab.shots = where
    return where


def uname(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


# Every page of a test: `window.__setHidden(true)` makes the tab hidden as far as the page can
# tell (document.visibilityState, document.hidden, a visibilitychange event): headless
# Chromium shows every tab. Notifications the page raises are recorded in `window.__notes`
# (the real ones are made too). Headless Chromium denies the notification permission without
# asking; unless the context grants it, the page sees a browser that has not asked yet
# ("default"), as a new user's would, and `Notification.requestPermission()` counts the prompt
# in `window.__permissionAsks` and answers `window.__permissionAnswer` ("denied" unless set).
TEST_INIT_SCRIPT = """
(() => {
  let hidden = false;
  Object.defineProperty(Document.prototype, 'visibilityState',
    { configurable: true, get() { return hidden ? 'hidden' : 'visible'; } });
  Object.defineProperty(Document.prototype, 'hidden', { configurable: true, get() { return hidden; } });
  window.__setHidden = (h) => { hidden = h; document.dispatchEvent(new Event('visibilitychange')); };
  window.__notes = [];
  window.__permissionAsks = 0;
  window.__permissionAnswer = 'denied';
  const Real = window.Notification;
  if (typeof Real !== 'function') return;
  let permission = Real.permission === 'granted' ? 'granted' : 'default';
  class Recorded extends Real {
    constructor(title, options) {
      window.__notes.push({ title, body: options && options.body, tag: options && options.tag });
      super(title, options);
    }
  }
  Object.defineProperty(Recorded, 'permission', { configurable: true, get: () => permission });
  Recorded.requestPermission = async () => {
    window.__permissionAsks += 1;
    if (permission === 'default') permission = window.__permissionAnswer;
    return permission;
  };
  window.Notification = Recorded;
})();
"""


class Tab:
    """One page of the client: in a browser context of its own (another browser, as far as
    the session goes), or a second tab of another Tab's browser (``same_browser_as``: the
    same cookies, BroadcastChannel and Web Locks)."""

    shots: Path | None = None  # where ``shot`` writes (the ``screenshots`` fixture sets it)

    def __init__(
        self,
        browser: Any,
        base: str,
        *,
        viewport: dict[str, int] | None = None,
        same_browser_as: Tab | None = None,
        storage_state: Any = None,
        permissions: list[str] | None = None,
    ) -> None:
        self.base = base
        self.owns_context = same_browser_as is None
        if same_browser_as is not None:
            self.context = same_browser_as.context
        else:
            self.context = browser.new_context(
                viewport=viewport or {"width": 1280, "height": 800},
                storage_state=storage_state,
                permissions=permissions or [],
            )
            self.context.add_init_script(TEST_INIT_SCRIPT)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._on_dialog)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", self._on_console)
        self.username = ""
        self.response = self.page.goto(base + "/")

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _on_console(self, msg: Any) -> None:
        if msg.type == "error" and not any(s in msg.text for s in IGNORED_CONSOLE):
            # failed requests the test provokes on purpose (404 user_not_found) are fine
            if "Failed to load resource" not in msg.text:
                self.errors.append(msg.text)

    def close(self) -> None:
        if self.owns_context:
            self.context.close()
        elif not self.page.is_closed():
            self.page.close()

    # ---- actions
    def register(self, username: str) -> Tab:
        self.username = username
        p = self.page
        p.fill("#username", username)
        p.fill("#password", PASSWORD)
        p.click("#register-btn")
        self.expect_online()
        _expect()(p.locator("#me")).to_have_text(username)
        return self

    def login(self, username: str) -> Tab:
        self.username = username
        p = self.page
        _expect()(p.locator("#login-btn")).to_be_visible()
        p.fill("#username", username)
        p.fill("#password", PASSWORD)
        p.click("#login-btn")
        self.expect_online()
        _expect()(p.locator("#me")).to_have_text(username)
        return self

    def hide(self, hidden: bool = True) -> None:
        """The tab goes to the background (or comes back): see TEST_INIT_SCRIPT."""
        self.page.evaluate("(h) => window.__setHidden(h)", hidden)

    def notes(self) -> list[dict[str, Any]]:
        notes: list[dict[str, Any]] = self.page.evaluate("() => window.__notes")
        return notes

    def badge(self, room_id: str) -> Any:
        return self.page.locator(f'[data-room-id="{room_id}"] .unread')

    def expect_online(self, timeout: int = WAIT_MS) -> None:
        _expect()(self.page.locator("#conn-state")).to_have_text("online", timeout=timeout)

    def open_dm(self, username: str) -> str:
        p = self.page
        p.fill("#new-dm-input", username)
        p.click("#new-dm-btn")
        _expect()(p.locator("#room-title")).to_have_text(username)
        return self.active_room()

    def active_room(self) -> str:
        _expect()(self.page.locator("#room-pane")).not_to_have_attribute("data-active-room", "")
        rid = self.page.get_attribute("#room-pane", "data-active-room")
        assert rid
        return rid

    def open_room(self, room_id: str) -> None:
        item = self.page.locator(f'[data-room-id="{room_id}"]')
        _expect()(item).to_be_visible()
        item.click()
        _expect()(self.page.locator("#room-pane")).to_have_attribute("data-active-room", room_id)

    def send(self, text: str) -> None:
        p = self.page
        p.fill("#composer-input", text)
        p.press("#composer-input", "Enter")

    def expect_bodies(self, bodies: list[str]) -> None:
        """The confirmed messages on screen, in order."""
        _expect()(self.page.locator("#messages [data-msg-id] .msg-body")).to_have_text(bodies)

    def msg_ids(self) -> list[str]:
        ids: list[str] = self.page.eval_on_selector_all(
            "#messages [data-msg-id]", "els => els.map(e => e.dataset.msgId)"
        )
        return ids

    def shot(self, name: str) -> None:
        assert Tab.shots is not None, "the screenshots fixture sets the directory"
        path = Tab.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        assert path.stat().st_size > 0, path

    def assert_clean(self) -> None:
        assert self.dialogs == [], f"{self.username}: dialogs opened: {self.dialogs}"
        assert self.errors == [], f"{self.username}: page errors: {self.errors}"


EXACTLY_ONCE_JS = """
(expected) => {
  const els = [...document.querySelectorAll('#messages [data-msg-id]')];
  if (document.querySelector('#messages .pending, #messages .failed')) return false;
  const ids = els.map((e) => e.dataset.msgId);
  const bodies = els.map((e) => e.querySelector('.msg-body').textContent).sort();
  const want = [...expected].sort();
  return new Set(ids).size === ids.length && JSON.stringify(bodies) === JSON.stringify(want);
}
"""


def open_tab(tabs: list[Tab], browser: Any, base: str, **kw: Any) -> Tab:
    """A new tab, closed at the end of the test by the ``tabs`` fixture (conftest.py)."""
    t = Tab(browser, base, **kw)
    tabs.append(t)
    return t


def wait_exactly_once(tab: Tab, expected: list[str], timeout: int) -> None:
    """Every expected body shown once, confirmed (no pending/failed), ids unique."""
    try:
        tab.page.wait_for_function(EXACTLY_ONCE_JS, arg=expected, timeout=timeout)
    except Exception as exc:
        state = tab.page.evaluate(
            """() => [...document.querySelectorAll('#messages [data-testid=message]')].map((e) =>
                 [e.dataset.msgId || null, e.className, e.querySelector('.msg-body').textContent])"""
        )
        bodies = Counter(s[2] for s in state if s[0])
        missing = [b for b in expected if bodies[b] == 0]
        doubled = [b for b, n in bodies.items() if n > 1]
        raise AssertionError(
            f"{tab.username}: missing={missing} doubled={doubled} "
            f"not-confirmed={[s for s in state if not s[0]]} "
            f"conn={tab.page.get_attribute('#conn-state', 'data-state')}"
        ) from exc
    ids = tab.msg_ids()
    counts = Counter(ids)
    assert all(n == 1 for n in counts.values()), f"duplicated ids: {counts.most_common(3)}"


# ------------------------------------------------------------------------------------ tests


def test_two_users_chat_both_ways_by_username(browser: Any, cluster_url: str) -> None:
    expect = _expect()
    alice = Tab(browser, cluster_url)
    bob = Tab(browser, cluster_url)
    try:
        # the servers send the CSP as a header too
        assert alice.response is not None
        csp = alice.response.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "object-src 'none'" in csp, csp
        expect(alice.page.locator("#login-btn")).to_be_visible()
        expect(alice.page.locator("#conn-state")).to_have_text("offline")
        alice.shot("login")

        a_name, b_name = uname("alice"), uname("bob")
        alice.register(a_name)
        bob.register(b_name)

        # an unknown username is reported clearly
        alice.page.fill("#new-dm-input", uname("nobody"))
        alice.page.click("#new-dm-btn")
        expect(alice.page.locator("#error-banner")).to_be_visible()
        expect(alice.page.locator("#error-banner")).to_contain_text("no user")

        room = alice.open_dm(b_name)
        alice.send("hi bob")
        alice.expect_bodies(["hi bob"])

        # bob: the room appears by itself, unread 1, alice shown online
        item = bob.page.locator(f'[data-room-id="{room}"]')
        expect(item.locator(".unread")).to_have_text("1")
        expect(item.locator(".online-dot.on")).to_have_count(1)
        expect(alice.page.locator(f'[data-room-id="{room}"] .online-dot.on')).to_have_count(1)
        bob.open_room(room)
        expect(item.locator(".unread")).to_be_hidden()
        bob.expect_bodies(["hi bob"])

        # typing indicator, then the answer
        bob.page.fill("#composer-input", "typing a reply")
        expect(alice.page.locator("#typing")).to_have_text(f"{b_name} is typing…")
        bob.send("hello alice")
        alice.expect_bodies(["hi bob", "hello alice"])
        bob.expect_bodies(["hi bob", "hello alice"])
        expect(alice.page.locator("#typing")).to_have_text("")
        alice.send("how are you?")
        bob.expect_bodies(["hi bob", "hello alice", "how are you?"])
        expect(alice.page.locator(".msg-sender").first).to_have_text(a_name)

        # the 4000-character limit is enforced before sending
        alice.page.fill("#composer-input", "x" * 4001)
        expect(alice.page.locator("#send-btn")).to_be_disabled()
        expect(alice.page.locator("#char-count.over")).to_be_visible()
        alice.page.fill("#composer-input", "")
        alice.shot("chat")

        # bob goes away: alice sees him offline
        bob.close()
        expect(alice.page.locator(f'[data-room-id="{room}"] .online-dot.on')).to_have_count(0)
        alice.assert_clean()
    finally:
        alice.close()
        bob.close()


def test_third_user_joins_group(browser: Any, cluster_url: str) -> None:
    expect = _expect()
    ann, ben, cat = (Tab(browser, cluster_url) for _ in range(3))
    try:
        a_name, b_name, c_name = uname("ann"), uname("ben"), uname("cat")
        ann.register(a_name)
        ben.register(b_name)
        cat.register(c_name)

        group = f"Team {secrets.token_hex(2)}"
        ghost = uname("ghost")
        ann.page.fill("#new-group-name", group)
        ann.page.fill("#new-group-members", f"{b_name}, {ghost}")
        ann.page.click("#new-group-btn")
        expect(ann.page.locator("#error-banner")).to_contain_text(ghost)  # names the unknown
        ann.page.fill("#new-group-members", b_name)
        ann.page.click("#new-group-btn")
        expect(ann.page.locator("#room-title")).to_have_text(group)
        room = ann.active_room()
        ann.send("welcome ben")
        ann.expect_bodies(["welcome ben"])

        ben.open_room(room)
        ben.expect_bodies(["welcome ben"])
        ben.send("thanks ann")
        ann.expect_bodies(["welcome ben", "thanks ann"])

        # ann adds cat: the group appears for cat, with its history
        ann.page.fill("#add-member-input", c_name)
        ann.page.click("#add-member-btn")
        expect(ann.page.locator(f'#member-list [data-member="{c_name}"]')).to_be_visible()
        cat.open_room(room)
        expect(cat.page.locator("#room-title")).to_have_text(group)
        cat.expect_bodies(["welcome ben", "thanks ann"])
        cat.send("hello from cat")
        for t in (ann, ben, cat):
            t.expect_bodies(["welcome ben", "thanks ann", "hello from cat"])
        ben.send("hi cat")
        cat.expect_bodies(["welcome ben", "thanks ann", "hello from cat", "hi cat"])
        expect(ann.page.locator("#member-list [data-member]")).to_have_count(3)
        ann.shot("group")

        # the owner removes ben: the room disappears from ben's list
        ann.page.click(f'[data-remove-member="{b_name}"]')
        expect(ben.page.locator(f'[data-room-id="{room}"]')).to_have_count(0)
        expect(ann.page.locator(f'#member-list [data-member="{b_name}"]')).to_have_count(0)

        # cat leaves
        cat.page.click("#leave-btn")
        expect(cat.page.locator(f'[data-room-id="{room}"]')).to_have_count(0)
        expect(ann.page.locator(f'#member-list [data-member="{c_name}"]')).to_have_count(0)
        ann.send("just me now")
        ann.expect_bodies(["welcome ben", "thanks ann", "hello from cat", "hi cat", "just me now"])
        for t in (ann, ben, cat):
            t.assert_clean()
    finally:
        for t in (ann, ben, cat):
            t.close()


def _session_cookie(tab: Tab) -> dict[str, Any]:
    cookies = [c for c in tab.context.cookies() if c["name"] == "chat_session"]
    assert len(cookies) == 1, [c["name"] for c in tab.context.cookies()]
    cookie: dict[str, Any] = cookies[0]
    return cookie


def _storage(tab: Tab) -> str:
    text: str = tab.page.evaluate(
        "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    return text


def test_session_in_every_tab_and_logout_everywhere(browser: Any, cluster_url: str) -> None:
    """A second tab and a restarted browser are signed in without a password; the tokens are
    out of script's reach; logging out in one tab signs out the other tabs within a second and
    the other browsers holding the session soon after (the server closes their sockets 4001,
    the refresh answers 401); a login in one tab signs in the others."""
    expect = _expect()
    first = Tab(browser, cluster_url)
    tabs = [first]
    try:
        name = uname("dan")
        first.register(name)
        # the refresh token is an HttpOnly cookie for the session calls only; the access token
        # is in memory: neither is in any storage a script can read
        cookie = _session_cookie(first)
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict", cookie
        assert cookie["path"] == "/api/auth/session", cookie
        assert cookie["expires"] > time.time() + 3600, cookie  # survives a browser restart
        stored = _storage(first)
        assert "eyJ" not in stored and cookie["value"] not in stored, stored

        second = Tab(browser, cluster_url, same_browser_as=first)  # a new tab: signed in
        tabs.append(second)
        second.username = name
        second.expect_online()
        expect(second.page.locator("#me")).to_have_text(name)
        expect(second.page.locator("#login-view")).to_be_hidden()
        # the browser restarted (its cookies kept): signed in, no password asked
        restarted = Tab(browser, cluster_url, storage_state=first.context.storage_state())
        tabs.append(restarted)
        restarted.username = name
        restarted.expect_online()
        expect(restarted.page.locator("#me")).to_have_text(name)
        # a reload of a tab too
        second.page.reload()
        second.expect_online()

        first.page.click("#logout-btn")
        expect(first.page.locator("#login-view")).to_be_visible()
        # the other tab of this browser: within a second
        expect(second.page.locator("#login-view")).to_be_visible(timeout=1_000)
        expect(second.page.locator("#conn-state")).to_have_text("offline", timeout=1_000)
        expect(second.page.locator("#error-banner")).to_contain_text("session has ended")
        # another browser with the (now revoked) session: the server closes its socket
        expect(restarted.page.locator("#login-view")).to_be_visible(timeout=5_000)
        expect(restarted.page.locator("#conn-state")).to_have_text("offline")
        # the cookie is gone: a reload shows the login screen
        second.page.reload()
        expect(second.page.locator("#login-view")).to_be_visible()
        expect(second.page.locator("#chat-view")).to_be_hidden()
        restarted.page.reload()
        expect(restarted.page.locator("#login-view")).to_be_visible()

        # logging in again in one tab signs in the other tab of the browser
        second.login(name)
        first.username = name
        first.expect_online()
        expect(first.page.locator("#me")).to_have_text(name)
        expect(restarted.page.locator("#login-view")).to_be_visible()  # another browser
        for t in tabs:
            t.assert_clean()
    finally:
        for t in reversed(tabs):
            t.close()


def test_team_day_online_list_unread_badges_and_the_new_messages_line(
    browser: Any, cluster_url: str
) -> None:
    """A day's state in one picture (docs/screenshots/team.png): the online list, unread
    badges in two conversations and the "New messages" line where alice left off."""
    expect = _expect()
    alice = Tab(
        browser, cluster_url, viewport={"width": 1280, "height": 720}, permissions=["notifications"]
    )
    bob, carol = Tab(browser, cluster_url), Tab(browser, cluster_url)
    try:
        tag = secrets.token_hex(2)
        a_name, b_name, c_name = f"alice_{tag}", f"bob_{tag}", f"carol_{tag}"
        alice.register(a_name)
        bob.register(b_name)
        carol.register(c_name)
        alice.page.fill("#new-group-name", "Design review")
        alice.page.fill("#new-group-members", f"{b_name}, {c_name}")
        alice.page.click("#new-group-btn")
        expect(alice.page.locator("#room-title")).to_have_text("Design review")
        group = alice.active_room()
        alice.send("Mockups for the new sidebar are in the shared folder.")
        carol_dm = carol.open_dm(a_name)
        carol.send("Can you look at my pull request today?")
        dm = alice.open_dm(b_name)
        bob.open_room(dm)
        alice.send("Morning! Did the deploy go out?")
        bob.send("Yes, at 9:40. No errors so far.")
        alice.send("Great, thanks.")
        alice.expect_bodies(
            ["Morning! Did the deploy go out?", "Yes, at 9:40. No errors so far.", "Great, thanks."]
        )
        # alice turns to the group (and mutes it); bob writes on in the direct chat, carol in
        # the group
        alice.open_room(group)
        alice.page.click("#mute-btn")
        expect(alice.page.locator("#mute-btn")).to_have_attribute("aria-pressed", "true")
        bob.send("One more thing: the release notes need your review.")
        bob.send("Whenever you have a minute.")
        carol.open_room(group)
        carol.send("The contrast of the unread badge looks good to me.")
        expect(alice.badge(dm)).to_have_text("2")
        alice.expect_bodies(
            [
                "Mockups for the new sidebar are in the shared folder.",
                "The contrast of the unread badge looks good to me.",
            ]
        )
        # the group was read where she is looking; she leaves it for the direct chat
        expect(alice.badge(carol_dm)).to_have_text("1")
        alice.open_room(dm)
        expect(alice.page.locator("#messages [data-testid=new-divider]")).to_be_visible()
        expect(alice.page.locator("#online-list li[data-user]")).to_have_count(2)
        expect(alice.badge(dm)).to_be_hidden()
        expect(alice.badge(carol_dm)).to_have_text("1")
        alice.page.wait_for_function("() => document.title === '(1) Chat'")
        alice.page.evaluate("() => document.activeElement && document.activeElement.blur()")
        alice.shot("team")
        for t in (alice, bob, carol):
            t.assert_clean()
    finally:
        for t in (alice, bob, carol):
            t.close()


def test_fix_and_find_messages_screenshots(browser: Any, cluster_url: str) -> None:
    """Issue 17 in pictures (docs/screenshots/): an edited and a deleted message with the
    notices of a group (`edit-delete`), the menu of a message (`message-menu`), search
    results (`search`) and the group settings (`group-settings`). The behaviour is tested in
    test_messages_browser.py; here each picture is also checked for what it shows."""
    expect = _expect()
    alice = Tab(browser, cluster_url, viewport={"width": 1280, "height": 720})
    bob, carol = Tab(browser, cluster_url), Tab(browser, cluster_url)
    try:
        tag = secrets.token_hex(2)
        a_name, b_name, c_name = f"alice_{tag}", f"bob_{tag}", f"carol_{tag}"
        for t, n in ((alice, a_name), (bob, b_name), (carol, c_name)):
            t.register(n)
        alice.page.fill("#new-group-name", "Release 2.4")
        alice.page.fill("#new-group-members", b_name)
        alice.page.click("#new-group-btn")
        expect(alice.page.locator("#room-title")).to_have_text("Release 2.4")
        room = alice.active_room()
        alice.page.fill("#add-member-input", c_name)
        alice.page.click("#add-member-btn")
        bob.open_room(room)
        carol.open_room(room)
        alice.send("The release checklist: https://example.org/release/2.4")
        bob.send("Deploy is at 14:00 on Thursday.")
        carol.send("I pushed the wrong build, ignore the last link")
        bob.send("Changelog is ready for review.")
        alice.expect_bodies(
            [
                "The release checklist: https://example.org/release/2.4",
                "Deploy is at 14:00 on Thursday.",
                "I pushed the wrong build, ignore the last link",
                "Changelog is ready for review.",
            ]
        )
        # bob fixes a typo (the Up key), carol takes her message back
        bob.page.click("#composer-input")
        bob.page.press("#composer-input", "ArrowUp")
        bob.page.fill(".msg-edit-input", "The changelog is ready for review.")
        bob.page.press(".msg-edit-input", "Enter")
        wrong = carol.page.locator("#messages [data-msg-id]").filter(has_text="wrong build")
        wrong.hover()
        wrong.locator("[data-menu]").click()
        carol.page.click(".msg-menu [data-action=delete]")
        carol.page.click("[data-action=confirm-delete]")
        alice.page.click(f'[data-remove-member="{c_name}"]')
        expect(alice.page.locator("#messages .msg-edited")).to_have_count(1)
        expect(alice.page.locator("#messages [data-deleted]")).to_have_count(1)
        expect(alice.page.locator("#messages [data-testid=notice] .notice-text")).to_have_text(
            [
                f"{a_name} created the group",
                f"{a_name} added {c_name}",
                f"{a_name} removed {c_name}",
            ]
        )
        alice.page.evaluate("() => document.activeElement && document.activeElement.blur()")
        alice.page.mouse.move(0, 0)
        alice.shot("edit-delete")

        own = alice.page.locator("#messages [data-msg-id]").filter(has_text="release checklist")
        own.hover()
        own.locator("[data-menu]").click()
        expect(alice.page.locator(".msg-menu [data-action=edit]")).to_be_visible()
        alice.shot("message-menu")
        alice.page.keyboard.press("Escape")
        expect(alice.page.locator(".msg-menu")).to_have_count(0)

        alice.page.click("#settings-btn")
        alice.page.select_option("#who-can-add", "owner")
        alice.page.click("#settings-save")
        expect(alice.page.locator("#settings-note")).to_have_text("Saved.")
        expect(bob.page.locator("#add-member-note")).to_be_visible()
        alice.page.evaluate("() => document.activeElement && document.activeElement.blur()")
        alice.shot("group-settings")

        deadline = time.monotonic() + WAIT_MS / 1000
        results = alice.page.locator("#search-results li[data-result-id]")
        while True:  # the history writer stores a message a moment after its ack
            alice.page.fill("#search-input", "review")
            alice.page.press("#search-input", "Enter")
            try:
                expect(results).to_have_count(1, timeout=2_000)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        expect(results.first.locator(".result-snippet")).to_have_text(
            "The changelog is ready for review."
        )
        alice.page.evaluate("() => document.activeElement && document.activeElement.blur()")
        alice.shot("search")
        for t in (alice, bob, carol):
            t.assert_clean()
    finally:
        for t in (alice, bob, carol):
            t.close()


def _kill(kill_gateway: Callable[..., Any], gateway_id: str | None) -> Any:
    """kill_gateway(gateway_id) if the fixture takes the id of the gateway to kill."""
    try:
        takes_arg = len(inspect.signature(kill_gateway).parameters) > 0
    except (TypeError, ValueError):
        takes_arg = False
    return kill_gateway(gateway_id) if takes_arg else kill_gateway()


def test_gateway_killed_while_chatting_every_message_once(
    browser: Any, cluster_url: str, kill_gateway: Callable[..., Any]
) -> None:
    expect = _expect()
    eve, fay = Tab(browser, cluster_url), Tab(browser, cluster_url)
    try:
        e_name, f_name = uname("eve"), uname("fay")
        eve.register(e_name)
        fay.register(f_name)
        room = eve.open_dm(f_name)
        fay.open_room(room)

        sent: list[str] = []

        def say(tab: Tab, text: str) -> None:
            tab.send(text)
            sent.append(text)

        for i in range(4):
            say(eve, f"eve before {i}")
            say(fay, f"fay before {i}")
        wait_exactly_once(eve, sent, WAIT_MS)

        connects = int(eve.page.get_attribute("#conn-state", "data-connects") or "0")
        gateway = eve.page.get_attribute("#conn-state", "data-gateway") or None
        _kill(kill_gateway, gateway)

        # keep talking while eve's connection is down: hers wait as pending, then go out
        for i in range(4):
            say(eve, f"eve during {i}")
            say(fay, f"fay during {i}")

        eve.page.wait_for_function(
            "(n) => Number(document.querySelector('#conn-state').dataset.connects) > n",
            arg=connects,
            timeout=RECONNECT_MS,
        )
        eve.expect_online(RECONNECT_MS)
        fay.expect_online(RECONNECT_MS)
        assert eve.page.get_attribute("#conn-state", "data-gateway") != gateway or gateway is None

        for i in range(3):
            say(eve, f"eve after {i}")
            say(fay, f"fay after {i}")

        wait_exactly_once(eve, sent, RECONNECT_MS)
        wait_exactly_once(fay, sent, RECONNECT_MS)
        assert sorted(eve.msg_ids()) == sorted(fay.msg_ids())
        expect(eve.page.locator("#messages .pending")).to_have_count(0)
        eve.assert_clean()
        fay.assert_clean()
    finally:
        eve.close()
        fay.close()


def test_html_in_a_message_is_shown_as_text(browser: Any, cluster_url: str) -> None:
    expect = _expect()
    gus, hal = Tab(browser, cluster_url), Tab(browser, cluster_url)
    try:
        g_name, h_name = uname("gus"), uname("hal")
        gus.register(g_name)
        hal.register(h_name)
        room = gus.open_dm(h_name)
        hal.open_room(room)
        payloads = [XSS, "<script>alert(2)</script>", '<b onmouseover="alert(3)">bold</b>']
        for text in payloads:
            gus.send(text)
        for t in (gus, hal):
            t.expect_bodies(payloads)
            expect(t.page.locator("#messages img")).to_have_count(0)
            expect(t.page.locator("#messages script")).to_have_count(0)
            expect(t.page.locator("#messages b")).to_have_count(0)
        hal.page.hover("#messages [data-msg-id] >> nth=2")

        # a group name is user data too
        hal.page.fill("#new-group-name", XSS)
        hal.page.fill("#new-group-members", g_name)
        hal.page.click("#new-group-btn")
        expect(hal.page.locator("#room-title")).to_have_text(XSS)
        group = hal.active_room()
        expect(gus.page.locator(f'[data-room-id="{group}"] .room-name')).to_have_text(XSS)
        hal.send(XSS)
        hal.expect_bodies([XSS])
        gus.open_room(group)
        gus.expect_bodies([XSS])
        for t in (gus, hal):
            assert t.page.locator("img").count() == 0
            t.assert_clean()  # had any of it run, alert() would have opened a dialog
    finally:
        gus.close()
        hal.close()


def test_phone_sized_screen(browser: Any, cluster_url: str) -> None:
    expect = _expect()
    phone = {"width": 390, "height": 780}
    ivy, jon = Tab(browser, cluster_url, viewport=phone), Tab(browser, cluster_url)
    try:
        i_name, j_name = uname("ivy"), uname("jon")
        jon.register(j_name)
        ivy.register(i_name)
        # no room open yet: the sidebar is shown, the toggle is there
        expect(ivy.page.locator("#sidebar-toggle")).to_be_visible()
        expect(ivy.page.locator("#new-dm-input")).to_be_visible()
        room = ivy.open_dm(j_name)
        # a room was picked: the sidebar slid away, the conversation fills the screen
        expect(ivy.page.locator("#new-dm-input")).not_to_be_in_viewport()
        jon.open_room(room)
        jon.send("hello from a laptop")
        ivy.send("hello from a phone")
        ivy.expect_bodies(["hello from a laptop", "hello from a phone"])
        width = ivy.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= phone["width"], f"horizontal overflow: {width}px"
        ivy.shot("mobile")
        ivy.page.click("#sidebar-toggle")
        expect(ivy.page.locator(f'[data-room-id="{room}"]')).to_be_in_viewport()
        # the picture once the sidebar has slid in all the way
        ivy.page.wait_for_function(
            "() => document.getElementById('sidebar').getAnimations().length === 0"
        )
        ivy.shot("mobile-sidebar")
        ivy.page.click(f'[data-room-id="{room}"]')
        expect(ivy.page.locator("#new-dm-input")).not_to_be_in_viewport()
        ivy.assert_clean()
    finally:
        ivy.close()
        jon.close()
