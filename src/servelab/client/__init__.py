"""The only code in servelab that speaks HTTP.

Owns sending requests and observing their streams: the pure SSE parser (``sse``) and
assembler (``assemble``) fed line by line, request bodies (``payload``), the readers that only
timestamp and forward (``stream``, ``reading``, ``wire``: asyncio connections and h11;
``threaded``: httpx for injected transports and proxies; ``session``), the schedulers
(``load``), the monotonic clock (``clock``), the client's own load (``meter``), admin calls
(``admin``) and the transport seam (``transport``: what an engine or a test may put in place of
the network).

Must not: start processes, read or write run directories, or analyse results.
"""

__all__ = [
    "admin",
    "assemble",
    "clock",
    "load",
    "meter",
    "payload",
    "reading",
    "session",
    "sse",
    "stream",
    "threaded",
    "transport",
    "wire",
]
