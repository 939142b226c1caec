"""HTTP handlers: parse, call one query, shape the response."""
