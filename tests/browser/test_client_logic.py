"""The client's resume logic (web/js/sync.js + store.js) in Chromium, against a fake history API
whose writer lags: no backend needed, deterministic. The end-to-end tests cover the real thing;
these pin down the cases a live cluster rarely produces on demand (a message the history writer
stores late, while a client reconnects)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.browser

HARNESS = """
async () => {
  const { Store, codePoints } = await import('/js/store.js');
  const { Sync } = await import('/js/sync.js');
  const { errorText } = await import('/js/errors.js');

  const t0 = Date.parse('2026-11-23T10:00:00.000Z');
  const all = []; // every message sent; `stored` = the history writer has committed it
  const cmp = (a, b) => (a.sent_at < b.sent_at ? -1 : a.sent_at > b.sent_at ? 1
    : a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const add = (stored = true, extra = {}) => {
    const n = all.length;
    const m = { id: 'm' + String(n).padStart(5, '0'), room: 'r1', sender: 'bob', body: 'b' + n,
      sent_at: new Date(t0 + n * 1000).toISOString(), client_msg_id: 'c' + n, stored, ...extra };
    all.push(m);
    return m;
  };
  const api = {
    calls: [],
    async history(room, { before, after, limit = 50 } = {}) {
      this.calls.push({ before, after, limit });
      await new Promise((r) => setTimeout(r, 1));
      const L = all.filter((m) => m.stored).sort(cmp);
      let sel; let more;
      if (before) {
        const b = all.find((m) => m.id === before);
        sel = L.filter((m) => cmp(m, b) < 0); more = sel.length > limit; sel = sel.slice(-limit);
      } else if (after) {
        const a = all.find((m) => m.id === after);
        sel = L.filter((m) => cmp(m, a) > 0); more = sel.length > limit; sel = sel.slice(0, limit);
      } else {
        more = L.length > limit; sel = L.slice(-limit);
      }
      return { messages: sel.map(({ stored, ...m }) => m), has_more: more };
    },
  };
  const store = new Store();
  store.me = { id: 'u1', username: 'alice' };
  store.setRooms([{ id: 'r1', kind: 'direct', name: null, owner: null,
    members: ['alice', 'bob'], created_at: '2026-11-23T09:00:00.000Z' }]);
  const errors = [];
  const sync = new Sync({ api, store, onChange() {}, onError(e) { errors.push(String(e)); },
    onNew() {} });
  const settle = async () => {
    for (let i = 0; i < 1000 && sync.running.size; i += 1) {
      await Promise.all([...sync.running.values()]);
    }
  };
  const s = () => store.rs('r1');
  const held = () => s().sorted().map((m) => m.id);
  const out = {};

  // 1. 60 messages, the newest 3 not stored yet; the room opens before `synced`
  for (let i = 0; i < 57; i += 1) add();
  for (let i = 0; i < 3; i += 1) add(false);
  sync.onReady();
  await sync.loadFirst('r1');
  out.first_page = held().length;
  all.forEach((m) => { m.stored = true; });
  sync.onSynced();
  await settle();
  out.after_synced_newest = held()[held().length - 1];
  while (s().hasOlder) await sync.loadOlder('r1');
  out.after_scroll = held().length;

  // 2. the socket drops; 5 messages are sent meanwhile, one of them stored late; after the
  //    reconnect one more arrives live before `synced`
  sync.onBreak();
  const cursorBefore = s().cursor;
  for (let i = 0; i < 5; i += 1) add(i !== 1);
  sync.onReady();
  await settle();
  out.before_synced_missing = all.filter((m) => !s().msgs.has(m.id)).map((m) => m.id);
  out.cursor_kept = s().cursor === cursorBefore;
  const live = add(true);
  store.merge('r1', [(({ stored, ...m }) => m)(live)]);
  all.forEach((m) => { m.stored = true; });
  sync.onSynced();
  await settle();
  out.after_resume = held().length;
  out.in_order = JSON.stringify(held()) === JSON.stringify([...all].sort(cmp).map((m) => m.id));
  out.cursor = s().cursor;

  // 3. `resync` (the gateway lost the broker): nothing until `synced`, then the gap is fetched
  sync.onResync();
  const calls = api.calls.length;
  add(true);
  out.quiet_after_resync = api.calls.length === calls;
  sync.onSynced();
  await settle();
  out.after_resync = held().length;

  // 4. an own message whose ack was lost: the fetched copy confirms the pending one
  const p = store.addPending('r1', 'hello');
  add(true, { sender: 'alice', client_msg_id: p.cmid, body: 'hello' });
  sync.onBreak(); sync.onReady(); sync.onSynced();
  await settle();
  out.pending_left = store.pendingFor('r1').length;
  out.hello_count = s().sorted().filter((m) => m.body === 'hello').length;

  out.total = all.length;
  out.errors = errors;
  out.texts = Object.fromEntries(['not_a_member', 'room_not_found', 'user_not_found',
    'body_too_long', 'empty_body', 'rate_limited', 'invalid_frame']
    .map((c) => [c, errorText(c, c)]));
  out.emoji_len = codePoints('😀'.repeat(4000));
  return out;
}
"""


@pytest.fixture
def page(browser: Any, web_url: str) -> Iterator[Any]:
    context = browser.new_context()
    p = context.new_page()
    p.goto(web_url + "/")
    yield p
    context.close()


def test_resume_fetches_what_the_live_stream_missed(page: Any) -> None:
    out = page.evaluate(HARNESS)
    assert out["errors"] == []
    assert out["first_page"] == 50
    assert out["after_synced_newest"] == "m00059"  # the 3 stored late came with `synced`
    assert out["after_scroll"] == 60
    # before `synced` the late message is missing and the resume point does not move past it
    assert out["before_synced_missing"] == ["m00061"]
    assert out["cursor_kept"] is True
    assert out["after_resume"] == 66
    assert out["in_order"] is True
    assert out["cursor"] == "m00065"
    assert out["quiet_after_resync"] is True
    assert out["after_resync"] == 67
    assert out["pending_left"] == 0
    assert out["hello_count"] == 1
    assert out["total"] == 68


def test_every_error_code_has_a_human_text(page: Any) -> None:
    out = page.evaluate(HARNESS)
    for code, text in out["texts"].items():
        assert code not in text and "Something went wrong" not in text, (code, text)
    assert out["emoji_len"] == 4000  # the limit counts characters, not UTF-16 units
