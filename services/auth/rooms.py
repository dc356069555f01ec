"""``/api/rooms``: direct rooms, groups and their members (API.md "Rooms"), and the caller's
read state and mute in each (``/read``, ``/mute``; services/common/readstate.py).

Room objects returned to the caller carry their ``last_read``, ``unread`` and ``muted``."""

from __future__ import annotations

import re
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.exc import IntegrityError

from services.auth import directory
from services.auth.bearer import authenticate, bearer_token
from services.auth.errors import APIError
from services.auth.extensions import db
from services.auth.state import commit_and_publish, state
from services.auth.validation import json_object
from services.common import events, readstate
from services.common.outbox import add_events
from services.common.schema import ID_RE

bp = Blueprint("rooms", __name__, url_prefix="/api/rooms")


def _room_not_found() -> APIError:
    return APIError(404, "room_not_found", "no such room")


def _user_not_found(exc: directory.UserNotFound) -> APIError:
    names = exc.usernames
    return APIError(
        404,
        "user_not_found",
        "no such user: " + ", ".join(names)
        if len(names) == 1
        else "no such users: " + ", ".join(names),
        extra={"usernames": names},
    )


def _for_caller(user_id: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The room object with the caller's read state (after the change is committed)."""
    return readstate.annotate(db.session(), user_id, [obj])[0]


def _username_field() -> str:
    """The body's ``username`` (a JSON object with a string ``username``, else a 422)."""
    username = json_object().get("username")
    if not isinstance(username, str):
        raise APIError(422, "invalid_request", "'username' must be a string")
    return username


@bp.post("/direct")
def direct() -> Response:
    claims = authenticate()
    username = _username_field()
    try:
        obj, created, _ = directory.get_or_create_direct_room(
            db.session(), claims.user_id, username
        )
    except LookupError:
        raise APIError(404, "user_not_found", f"no such user: {username[:64]}") from None
    except ValueError:
        raise APIError(422, "invalid_request", "a direct room needs another user") from None
    if created:
        commit_and_publish()
    return jsonify(_for_caller(claims.user_id, obj))


def _room_name(data: dict[str, Any]) -> str:
    """A group's ``name``: a non-empty, printable string of up to MAX_ROOM_NAME characters
    (surrounding white space dropped)."""
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise APIError(422, "invalid_request", "'name' must be a non-empty string")
    name = name.strip()
    if len(name) > directory.MAX_ROOM_NAME or not name.isprintable():
        raise APIError(
            422, "invalid_request", f"'name' must be at most {directory.MAX_ROOM_NAME} characters"
        )
    return name


def _group_fields(data: dict[str, Any]) -> tuple[str, list[object]]:
    name = _room_name(data)
    members = data.get("members", [])
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise APIError(422, "invalid_request", "'members' must be a list of usernames")
    most = state().settings.max_group_members
    if len(members) > most:
        raise APIError(422, "invalid_request", f"a group has at most {most} members")
    return name, list(members)


USERNAME_JSON_BYTES = 40  # a username in a JSON list: up to 32 characters, quotes, comma


@bp.post("")
def create_group() -> tuple[Response, int]:
    claims = authenticate()
    # a group is created with its members in one call: room for every username it may hold
    request.max_content_length = (
        64 * 1024 + USERNAME_JSON_BYTES * state().settings.max_group_members
    )
    name, members = _group_fields(json_object())
    try:
        obj = directory.create_group(
            db.session(),
            claims.user_id,
            name,
            members,
            state().clock(),
            max_members=state().settings.max_group_members,
        )
    except directory.UserNotFound as exc:
        db.session.rollback()
        raise _user_not_found(exc) from None
    except directory.InvalidChange as exc:
        db.session.rollback()
        raise APIError(422, "invalid_request", str(exc)) from None
    commit_and_publish()
    return jsonify(_for_caller(claims.user_id, obj)), 201


@bp.get("")
def list_rooms() -> Response:
    claims = authenticate()
    session = db.session()
    rooms = directory.rooms_of_user(session, claims.user_id)
    return jsonify({"rooms": readstate.annotate(session, claims.user_id, rooms)})


@bp.get("/<room_id>")
def get_room(room_id: str) -> Response:
    claims = authenticate()
    try:
        obj = directory.member_room_object(db.session(), room_id, claims.user_id)
    except directory.RoomNotFound:
        raise _room_not_found() from None
    return jsonify(_for_caller(claims.user_id, obj))


@bp.patch("/<room_id>")
def update_room(room_id: str) -> Response:
    """The group's owner renames it and/or sets ``who_can_add`` (``owner`` | ``members``).
    404 for non-members and direct rooms (a direct room has no name or owner to change), 403
    for members other than the owner, 422 for a bad value; the members hear ``updated``, and a
    rename leaves a ``renamed`` notice in the room's history."""
    claims = authenticate()
    data = json_object()
    known = {"name", "who_can_add"}
    if not known.intersection(data):
        raise APIError(422, "invalid_request", "give 'name' and/or 'who_can_add'")
    name = _room_name(data) if "name" in data else None
    who = data.get("who_can_add")
    if "who_can_add" in data and who not in directory.WHO_CAN_ADD:
        raise APIError(422, "invalid_request", "'who_can_add' must be 'owner' or 'members'")
    try:
        obj, changed = directory.update_room(
            db.session(),
            room_id,
            claims.user_id,
            name=name,
            who_can_add=who if isinstance(who, str) else None,
            ms=state().clock(),
        )
    except directory.RoomNotFound:
        db.session.rollback()
        raise _room_not_found() from None
    except directory.NotAllowed as exc:
        db.session.rollback()
        raise APIError(403, "forbidden", str(exc)) from None
    if changed:
        commit_and_publish()
    else:
        db.session.rollback()
    return jsonify(_for_caller(claims.user_id, obj))


_MEMBERS_LIMIT = re.compile(r"[0-9]{1,4}")


@bp.get("/<room_id>/members")
def list_members(room_id: str) -> Response:
    """A page of the room's members by username, each with whether they are online now."""
    claims = authenticate()
    after = request.args.get("after") or None
    if after is not None and len(after) > 64:
        raise APIError(422, "invalid_request", "'after' must be a username")
    raw = request.args.get("limit", "200")
    if not _MEMBERS_LIMIT.fullmatch(raw) or not 1 <= int(raw) <= 1000:
        raise APIError(422, "invalid_request", "'limit' must be an integer from 1 to 1000")
    try:
        names, nxt = directory.members_page(
            db.session(), room_id, claims.user_id, after.lower() if after else None, int(raw)
        )
    except directory.RoomNotFound:
        raise _room_not_found() from None
    db.session.rollback()  # end the read transaction before asking the gateways
    online = state().presence(names, bearer_token() or "") if names else set()
    return jsonify(
        {"members": [{"username": n, "online": n in online} for n in names], "next": nxt}
    )


@bp.post("/<room_id>/members")
def add_member(room_id: str) -> Response:
    claims = authenticate()
    username = _username_field()
    try:
        obj, changed = directory.add_member(
            db.session(),
            room_id,
            claims.user_id,
            username,
            state().clock(),
            max_members=state().settings.max_group_members,
        )
        if changed:
            commit_and_publish()
    except directory.RoomNotFound:
        raise _room_not_found() from None
    except directory.InvalidChange as exc:
        raise APIError(422, "invalid_request", str(exc)) from None
    except directory.NotAllowed as exc:
        raise APIError(403, "forbidden", str(exc)) from None
    except directory.UserNotFound as exc:
        raise _user_not_found(exc) from None
    except IntegrityError:  # added concurrently by another member: done either way
        db.session.rollback()
        obj = directory.member_room_object(db.session(), room_id, claims.user_id)
    return jsonify(_for_caller(claims.user_id, obj))


@bp.delete("/<room_id>/members/<path:username>")
def remove_member(room_id: str, username: str) -> tuple[str, int]:
    claims = authenticate()
    try:
        directory.remove_member(db.session(), room_id, claims.user_id, username, state().clock())
    except directory.RoomNotFound:
        raise _room_not_found() from None
    except directory.InvalidChange as exc:
        raise APIError(422, "invalid_request", str(exc)) from None
    except directory.NotAllowed as exc:
        raise APIError(403, "forbidden", str(exc)) from None
    except directory.UserNotFound:
        raise APIError(404, "user_not_found", "that user is not a member of this room") from None
    commit_and_publish()
    return "", 204


READ_WAIT_S = 1.0  # how long a read may wait for its message to reach history


@bp.post("/<room_id>/read")
def mark_read(room_id: str) -> tuple[str, int]:
    """The caller has read the room up to ``message_id``: the position moves there if that is
    forwards (never back), and every connection of the caller hears ``read``."""
    claims = authenticate()
    message_id = json_object().get("message_id")
    if not isinstance(message_id, str) or not ID_RE.fullmatch(message_id):
        raise APIError(422, "invalid_request", "'message_id' must be a message id")
    session = db.session()
    if not _is_member(room_id, claims.user_id):
        raise _room_not_found()
    pos = readstate.message_position(session, room_id, message_id)
    deadline = time.monotonic() + READ_WAIT_S
    while pos is None and time.monotonic() < deadline:
        # a message acked a moment ago may still be in its writer's batch (~20 ms)
        session.rollback()
        time.sleep(0.05)
        pos = readstate.message_position(session, room_id, message_id)
    if pos is None:
        raise APIError(404, "message_not_found", "no such message in this room")
    if readstate.advance(session, claims.user_id, room_id, pos):
        add_events(session, [events.read_event(claims.user_id, room_id, pos[1], pos[0])])
        commit_and_publish()
    else:
        session.rollback()
    return "", 204


@bp.put("/<room_id>/mute")
def mute(room_id: str) -> Response:
    """Mute (or unmute) the room for the caller; their connections hear ``muted``."""
    claims = authenticate()
    muted = json_object().get("muted")
    if not isinstance(muted, bool):
        raise APIError(422, "invalid_request", "'muted' must be true or false")
    session = db.session()
    if not ID_RE.fullmatch(room_id) or not readstate.set_muted(
        session, claims.user_id, room_id, muted
    ):
        session.rollback()
        raise _room_not_found()
    add_events(session, [events.muted_event(claims.user_id, room_id, muted)])
    commit_and_publish()
    return jsonify({"room": room_id, "muted": muted})


def _is_member(room_id: str, user_id: str) -> bool:
    return bool(ID_RE.fullmatch(room_id)) and readstate.is_member(db.session(), room_id, user_id)
