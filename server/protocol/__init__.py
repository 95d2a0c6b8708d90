"""Message types and pure codecs: no asyncio, no sockets; bytes in, events out."""
