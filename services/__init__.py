"""The chat platform: one codebase, run all-in-one or as scaled services."""
