"""Transports: translate a wire format to and from the session API, nothing more."""
