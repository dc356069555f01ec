"""The small core every service shares: settings, ids, wire schema, tokens, bus, models."""
