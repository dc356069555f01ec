"""A send to a room the gateway does not know the user in yet waits for the joining that is on
its way (services/gateway/membership.py ``member_soon``, used by sending.py): alone, with the
in-process gateway of tests/gateway/test_change_delivery.py. Both modes, over the network:
tests/gateway/test_protocol.py::test_a_room_made_over_rest_takes_a_send_at_once."""

from __future__ import annotations

import asyncio

from services.gateway.membership import RoomState
from services.gateway.service import GatewayService
from tests.gateway.test_change_delivery import BOB, FakeConn, gateway  # noqa: F401

NEW = "n" * 26


def test_a_send_waits_for_the_joining_on_its_way(
    gateway: tuple[GatewayService, FakeConn],  # noqa: F811
) -> None:
    gw, _conn = gateway
    m = gw.membership

    async def body() -> None:
        waiting = asyncio.ensure_future(m.member_soon(BOB, NEW, 5.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # not a member yet: it waits
        started = asyncio.get_running_loop().time()
        room = RoomState({"id": NEW, "kind": "direct", "owner": None, "version": 1})
        m.rooms[NEW] = room
        m._join(m.users[BOB], room)  # the `joined` event applied
        assert await waiting is True
        assert asyncio.get_running_loop().time() - started < 1.0  # at once, not at the timeout
        assert m._join_waiters == {}

    asyncio.run(body())


def test_no_joining_gives_up_at_the_timeout_and_leaves_nothing_behind(
    gateway: tuple[GatewayService, FakeConn],  # noqa: F811
) -> None:
    gw, _conn = gateway
    m = gw.membership

    async def body() -> None:
        results = await asyncio.gather(*(m.member_soon(BOB, NEW, 0.1) for _ in range(3)))
        assert results == [False, False, False]
        assert m._join_waiters == {}
        assert await m.member_soon(BOB, "r" * 26, 0.1) is True  # a member already: no wait

    asyncio.run(body())
