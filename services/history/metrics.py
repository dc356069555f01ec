"""History service metrics (module level: one set per process, shared by every writer)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WRITTEN = Counter(
    "chat_history_messages_written_total", "Messages inserted into the messages table"
)
DUPLICATES = Counter(
    "chat_history_duplicates_total",
    "Deliveries of a message that was already stored (redelivery or retried send)",
)
DEAD_LETTERS = Counter(
    "chat_history_dead_letters_total",
    "Deliveries sent to the dead-letter queue, by reason",
    ["reason"],
)
BATCH_SIZE = Histogram(
    "chat_history_batch_size",
    "Deliveries per committed batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 400, 800),
)
WRITE_LAG = Histogram(
    "chat_history_write_lag_seconds",
    "From a message's acceptance (sent_ms) to the commit of its row",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
BACKLOG = Gauge(
    "chat_history_backlog", "Messages ready in a history shard's queue (broker's count)", ["queue"]
)
SHARDS_HELD = Gauge("chat_history_shards_held", "History shards this writer process consumes")
DB_RETRIES = Counter(
    "chat_history_db_retries_total",
    "Batches retried after a database error (the batch stays unacked meanwhile)",
)
REDELIVERED = Counter(
    "chat_history_redelivered_total", "Deliveries flagged as redelivered by the broker"
)
MARKERS = Counter("chat_history_markers_total", "Sync markers answered with a synced event")
CHANGES = Counter(
    "chat_history_changes_total",
    "Edits and deletes received, by kind and outcome (applied, pending: its message not stored "
    "yet, refused, moot: already deleted, duplicate: a redelivery or retry, changed nothing)",
    ["kind", "status"],
)
PENDING_APPLIED = Counter(
    "chat_history_pending_changes_applied_total",
    "Edits and deletes that arrived before their message, applied when it was stored",
)
