"""Shared evaluation: one protocol, every model, the same stored candidates (see DESIGN §3).
`protocol.evaluate(data, scorer, protocol)` is the entry point; models plug in through `protocol.Scorer`.
Import each name from its module (candidates, metrics, popularity, protocol, sharded, genre, cold)."""
