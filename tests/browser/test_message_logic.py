"""The client's logic for edits, deletes, notices, links, search and the conversation list's
preview (web/js/text.js, store.js, sync.js), in Chromium without a server: links are parts of
text (never HTML), a later state of a message wins whatever order its copies come in, a window
opened around a search result keeps live messages aside until it reaches the present (no
gap), and a server without `around` still finds the message. The end-to-end tests
(test_messages_browser.py) run the real thing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser: Any, web_url: str) -> Iterator[Any]:
    context = browser.new_context()
    p = context.new_page()
    p.goto(web_url + "/")
    yield p
    context.close()


TEXT = """
async (body) => {
  const t = await import('/js/text.js');
  return t.linkParts(body);
}
"""


@pytest.mark.parametrize(
    ("body", "parts"),
    [
        ("no link here", [{"text": "no link here"}]),
        (
            "see https://example.org/a?b=1. ok",
            [
                {"text": "see "},
                {"text": "https://example.org/a?b=1", "href": "https://example.org/a?b=1"},
                {"text": ". ok"},
            ],
        ),
        (
            "(http://x.org/wiki/A_(b)) and (https://y.org)",
            [
                {"text": "("},
                {"text": "http://x.org/wiki/A_(b)", "href": "http://x.org/wiki/A_(b)"},
                {"text": ") and ("},
                {"text": "https://y.org", "href": "https://y.org/"},
                {"text": ")"},
            ],
        ),
        (
            "javascript:alert(1) data:text/html,x",
            [{"text": "javascript:alert(1) data:text/html,x"}],
        ),
        ("ftp://x.org/file", [{"text": "ftp://x.org/file"}]),
        (
            '<a href="https://e.org">x</a>',
            [
                {"text": '<a href="'},
                {"text": "https://e.org", "href": "https://e.org/"},
                {"text": '">x</a>'},
            ],
        ),
        ("", [{"text": ""}]),
    ],
)
def test_links_are_parts_of_the_text(page: Any, body: str, parts: list[dict[str, str]]) -> None:
    got = page.evaluate(TEXT, body)
    assert got == parts
    assert "".join(p["text"] for p in got) == body  # nothing of the body is lost or added


LOGIC = """
async () => {
  const t = await import('/js/text.js');
  const { Store, isLaterState } = await import('/js/store.js');
  const { Sync } = await import('/js/sync.js');
  const out = {};
  const n = (event, username, by, name = null) => ({ id: 'n', room: 'r1', sender: by, body: null,
    kind: 'notice', notice: { event, username, by, name } });
  out.notices = [
    t.noticeText(n('joined', 'bob', 'alice')), t.noticeText(n('joined', 'bob', 'bob')),
    t.noticeText(n('left', 'bob', 'bob')), t.noticeText(n('removed', 'bob', 'alice')),
    t.noticeText(n('renamed', null, 'alice', 'Ops <b>')), t.noticeText(n('created', null, 'alice')),
    t.noticeText(n('something-new', null, 'alice')),
  ];
  const isMe = (u) => u === 'me';
  out.previews = [
    t.previewText({ sender: 'bob', body: 'hi\\nthere', kind: 'text' }, { isMe, isGroup: false }),
    t.previewText({ sender: 'bob', body: 'hi', kind: 'text' }, { isMe, isGroup: true }),
    t.previewText({ sender: 'me', body: 'yo', kind: 'text' }, { isMe, isGroup: true }),
    t.previewText({ sender: 'bob', body: null, deleted: true, kind: 'text' }, { isMe, isGroup: false }),
    t.previewText(n('left', 'bob', 'bob'), { isMe, isGroup: true }),
  ];
  const marked = (body, q) => t.snippetParts(body, q).filter((p) => p.hit).map((p) => p.text);
  out.snippets = {
    viet: marked('Xin chào các bạn', 'chao'),
    prefix: marked('deploying the deploy today', 'dep'),
    short: marked('ok, okay', 'ok'),
    case: marked('Hello WORLD', 'world'),
  };
  const long = 'x '.repeat(200) + 'needle ' + 'y '.repeat(200);
  const parts = t.snippetParts(long, 'needle');
  out.long = { hit: parts.filter((p) => p.hit).map((p) => p.text), first: parts[0].text,
    last: parts[parts.length - 1].text, len: parts.map((p) => p.text).join('').length };

  // a message only moves forward: edited (later edited_at), then deleted for good
  const base = { id: 'm1', room: 'r1', sender: 'bob', body: 'v1', sent_at: '2026-11-23T10:00:00.000Z',
    kind: 'text', edited_at: null, deleted: false };
  const v2 = { ...base, body: 'v2', edited_at: '2026-11-23T10:01:00.000Z' };
  const v3 = { ...base, body: 'v3', edited_at: '2026-11-23T10:02:00.000Z' };
  const gone = { ...base, body: null, deleted: true, edited_at: v3.edited_at };
  out.later = [isLaterState(base, v2), isLaterState(v2, base), isLaterState(v2, v3),
    isLaterState(gone, v3), isLaterState(v3, gone)];
  const store = new Store();
  store.me = { id: 'u1', username: 'me' };
  store.setRooms([{ id: 'r1', kind: 'direct', members: ['me', 'bob'], member_count: 2 }]);
  store.rs('r1').loaded = true;
  store.merge('r1', [base]);
  store.applyChanged(v3);
  store.merge('r1', [v2]); // an older copy (a history page read before the edit) changes nothing
  store.mergeLive('r1', [base]); // the original frame, late
  out.after_edits = store.rs('r1').msgs.get('m1').body;
  store.applyChanged(gone);
  store.applyChanged(v3);
  const held = store.rs('r1').msgs.get('m1');
  out.after_delete = [held.deleted, held.body];
  // an edit that overtook its message: taken at the end of a room showing its newest messages
  const m2 = { ...base, id: 'm2', body: 'fresh', sent_at: '2026-11-23T10:05:00.000Z',
    edited_at: '2026-11-23T10:05:01.000Z' };
  store.applyChanged(m2);
  store.mergeLive('r1', [{ ...m2, body: 'first text', edited_at: null }]);
  out.overtaken = store.rs('r1').msgs.get('m2').body;
  // ...but not one older than the window (it would open a gap)
  const old = { ...base, id: 'm0', sent_at: '2026-11-22T10:00:00.000Z', edited_at: v2.edited_at };
  store.applyChanged(old);
  out.old_taken = store.rs('r1').msgs.has('m0');
  // Up: my newest message that is not deleted
  store.merge('r1', [{ ...base, id: 'm3', sender: 'me', body: 'mine', sent_at: '2026-11-23T10:06:00.000Z' },
    { ...base, id: 'm4', sender: 'me', body: null, deleted: true, sent_at: '2026-11-23T10:07:00.000Z' },
    { ...base, id: 'm5', sender: 'bob', body: 'later', sent_at: '2026-11-23T10:08:00.000Z' }]);
  out.up = store.lastEditable('r1').id;
  out.preview = t.previewText(store.preview('r1'), { isMe });

  // a search result's window: around=, live messages kept aside, then the present (no gap)
  const t0 = Date.parse('2026-11-23T10:00:00.000Z');
  const all = [];
  for (let i = 0; i < 300; i += 1) {
    all.push({ id: 'x' + String(i).padStart(4, '0'), room: 'r2', sender: 'bob', body: 'b' + i,
      sent_at: new Date(t0 + i * 1000).toISOString(), kind: 'text', edited_at: null, deleted: false });
  }
  const makeApi = (withAround) => ({
    calls: [],
    async history(room, { before, after, around, limit = 50 } = {}) {
      this.calls.push({ before, after, around, limit });
      await new Promise((r) => setTimeout(r, 1));
      let sel; const out = {};
      if (around && withAround) {
        const i = all.findIndex((m) => m.id === around);
        const lo = Math.max(0, i - Math.floor((limit - 1) / 2));
        sel = all.slice(lo, lo + limit); out.has_more = lo > 0;
        out.has_more_after = lo + limit < all.length;
      } else if (before) {
        const i = all.findIndex((m) => m.id === before);
        sel = all.slice(Math.max(0, i - limit), i); out.has_more = i - limit > 0;
      } else if (after) {
        const i = all.findIndex((m) => m.id === after);
        sel = all.slice(i + 1, i + 1 + limit); out.has_more = i + 1 + limit < all.length;
      } else {
        sel = all.slice(-limit); out.has_more = all.length > limit;
      }
      return { messages: sel, ...out };
    },
  });
  for (const withAround of [true, false]) {
    const key = withAround ? 'around' : 'no_around';
    const api = makeApi(withAround);
    const st = new Store();
    st.me = { id: 'u1', username: 'me' };
    st.setRooms([{ id: 'r2', kind: 'direct', members: ['me', 'bob'], member_count: 2 }]);
    const sync = new Sync({ api, store: st, onChange() {}, onError(e) { throw e; }, onNew() {} });
    sync.synced = true;
    await sync.loadFirst('r2');
    const found = await sync.loadAround('r2', 'x0100');
    const s = st.rs('r2');
    const r = { found, held: s.sorted().length, hasNewer: s.hasNewer, calls: api.calls.length };
    if (withAround) {
      // live messages while in the past: kept aside, not shown after a gap
      const live = { ...all[299], id: 'x0300', body: 'live', sent_at: new Date(t0 + 300000).toISOString() };
      const added = st.mergeLive('r2', [live]);
      r.live_added = added.length;
      r.live_in_window = s.msgs.has('x0300');
      r.unread_counted_exactly = st.recount('r2');
      while (s.hasNewer) await sync.loadNewer('r2');
      const ids = s.sorted().map((m) => m.id);
      r.contiguous = ids.every((id, i) => i === 0 || id > ids[i - 1]);
      r.first = ids[0];
      r.last = ids[ids.length - 1];
      r.count = ids.length;
      r.cursor = s.cursor;
    }
    out[key] = r;
  }
  return out;
}
"""


def test_notices_previews_snippets_and_message_states(page: Any) -> None:
    out = page.evaluate(LOGIC)
    assert out["notices"] == [
        "alice added bob",
        "bob joined",
        "bob left",
        "alice removed bob",
        "alice renamed the group to Ops <b>",
        "alice created the group",
        "alice changed the conversation",
    ]
    assert out["previews"] == ["hi there", "bob: hi", "You: yo", "message deleted", "bob left"]
    assert out["snippets"] == {
        "viet": ["chào"],
        "prefix": ["deploying", "deploy"],
        "short": ["ok"],
        "case": ["WORLD"],
    }
    assert out["long"]["hit"] == ["needle"]
    assert out["long"]["first"] == "…" and out["long"]["last"] == "…"
    assert out["long"]["len"] <= 162
    assert out["later"] == [True, False, True, False, True]
    assert out["after_edits"] == "v3"
    assert out["after_delete"] == [True, None]  # the tombstone stays, whatever comes after
    assert out["overtaken"] == "fresh"
    assert out["old_taken"] is False
    assert out["up"] == "m3"
    assert out["preview"] == "later"


def test_a_search_result_opens_a_window_that_reaches_the_present_without_a_gap(page: Any) -> None:
    out = page.evaluate(LOGIC)
    a = out["around"]
    assert a["found"] is True and a["hasNewer"] is True
    assert a["held"] == 50
    assert a["live_added"] == 1 and a["live_in_window"] is False
    assert a["unread_counted_exactly"] is False  # a window in the past cannot count what follows
    assert a["contiguous"] is True
    assert a["first"] == "x0076" and a["last"] == "x0300" and a["count"] == 225
    assert a["cursor"] == "x0299"  # from history only: the live one is not a resume point
    # a server without `around` answers the newest page: older pages until the message is in
    b = out["no_around"]
    assert b["found"] is True and b["hasNewer"] is False
    assert b["held"] >= 200
