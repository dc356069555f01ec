"""The history service: writes the message stream to the database and serves it back.

- ``writer``: consumes the ``chat.history`` queue, batched idempotent inserts, acks after commit,
  answers the gateways' sync markers, isolates poison messages to the dead-letter queue.
- ``api``: ``GET /api/history/{room_id}`` with keyset (cursor) pagination.
- ``service``: both, composed for the all-in-one app; ``app``: the scaled process.
"""
