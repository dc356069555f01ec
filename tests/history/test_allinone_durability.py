"""Ack means durable in the all-in-one mode too (API.md: an acked message "will be in history
even if any one service crashes right after"): the process is killed with SIGKILL right after
the last ack, started again on the same SQLite file, and every acked message is there.
(The scaled mode's version of this is the fault suite's history-writer and broker kills.)"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from pathlib import Path

from tests.conftest import FAST_ENV
from tests.support.allinone import AllInOne
from tests.support.client import WsClient, direct_room, history, register_and_login


def test_kill_9_right_after_acks_loses_nothing() -> None:
    state = Path(tempfile.mkdtemp(prefix="chat-aio-kill-"))
    server = AllInOne(state, FAST_ENV).start()
    try:
        stack = server.stack()
        alice, bob = register_and_login(stack), register_and_login(stack)
        room = direct_room(stack, alice, bob.username)["id"]
        acked: list[dict[str, object]] = []

        async def send_then_kill() -> None:
            c = await WsClient.connect(stack, alice)
            cmids = [str(uuid.uuid4()) for _ in range(50)]
            for cmid in cmids[:10]:  # one at a time
                ack = await c.send_message(f"one {cmid}", room=room, cmid=cmid)
                assert ack["type"] == "ack", ack
                acked.append(ack["message"])
            for cmid in cmids[10:]:  # pipelined, as a busy client does
                await c.send(
                    {"type": "send", "room": room, "body": f"many {cmid}", "client_msg_id": cmid}
                )
            for _ in cmids[10:]:
                ack = await c.expect(lambda f: f["type"] in ("ack", "error"), 15)
                assert ack["type"] == "ack", ack
                acked.append(ack["message"])
            server.kill9()  # at once: no shutdown, no flush

        asyncio.run(send_then_kill())
        server.start()  # the same SQLite file
        page = history(stack, bob, room, limit=200).json()
        stored = {m["id"]: m for m in page["messages"]}
        missing = [m["id"] for m in acked if m["id"] not in stored]
        assert not missing, f"{len(missing)} of {len(acked)} acked messages lost: {missing[:3]}"
        assert all(stored[m["id"]] == m for m in acked)  # the very message the ack carried
        assert len(page["messages"]) == len(acked)
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)
