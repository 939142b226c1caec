"""HTTP handlers: parse the request, call one function of `core`, shape the response."""
