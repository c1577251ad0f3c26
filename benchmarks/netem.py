"""A network emulator: a TCP proxy that adds a round-trip delay and caps each connection's bandwidth.

    from netem import Netem, PROFILES
    with Netem(("127.0.0.1", 8333), PROFILES["region"]) as net:
        ...  # point the client at net.endpoint; net.stats() counts what went through

Each direction of each connection is a pipelined queue of timestamped chunks, never a sleep per
chunk in the reading path: a chunk read at ``arrival`` is released to the other side at

    release = max(arrival + delay, previous release) + size / bandwidth

(the link serialises it, then it propagates for the one-way ``delay`` = RTT / 2), while the
reader keeps reading the next chunks. So a stream gets the full bandwidth whatever the delay, as a
TCP connection whose window covers the bandwidth-delay product does. The reader stops reading
when a direction holds more than ``buffer`` bytes not yet released (twice the bandwidth-delay
product, at least 4 MiB), which is the backpressure a sender sees on a real link.

A new connection pays one round trip (the TCP handshake) before its first byte: the client's
first chunk is not sent on before ``accept + RTT``, then travels ``RTT / 2`` like any other.
(The client's ``connect()`` itself returns at once: the wait shows at its first answer, which is
where a user sees it.)

Counting, for the benchmark's tables:

- ``connections``: TCP connections accepted;
- ``requests``: HTTP/1.x request lines in the client-to-server streams (bodies are skipped by
  ``Content-Length`` or chunked framing, so bytes of an upload never count as a request);
- ``round_trips``: on each connection, the handshake plus every turn of the conversation (the
  client sent something, then the server answered), summed over connections;
- ``serial_round_trips``: the most of those round trips that are pairwise disjoint in time (no
  two overlap): the length of the chain the client waited for one after the other. Each round
  trip lasts at least one RTT, so ``serial_round_trips x RTT`` is a floor of the wall time.

``Profile("loopback", 0, None)`` forwards without delay or cap and still counts.
"""

from __future__ import annotations

import asyncio
import collections
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CHUNK = 256 * 1024
MIN_BUFFER = 4 * 1024 * 1024
_REQUEST_LINE = re.compile(rb"^[A-Z]+ \S+ HTTP/1\.[01]$")


@dataclass(frozen=True)
class Profile:
    name: str
    rtt: float  # seconds, both ways
    bandwidth: float | None  # bytes per second per connection and direction; None: no cap

    @property
    def delay(self) -> float:
        return self.rtt / 2

    def describe(self) -> str:
        if not self.rtt and not self.bandwidth:
            return f"{self.name} (no delay, no cap)"
        cap = f"{self.bandwidth / 1e6:g} MB/s per connection" if self.bandwidth else "no cap"
        return f"{self.name} ({self.rtt * 1000:g} ms RTT, {cap})"


PROFILES = {
    "loopback": Profile("loopback", 0.0, None),
    "region": Profile("region", 0.020, 40e6),
    "far": Profile("far", 0.080, 15e6),
}


@dataclass
class Stats:
    connections: int = 0
    requests: int = 0
    round_trips: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    intervals: list[tuple[float, float]] = field(default_factory=list)

    @property
    def serial_round_trips(self) -> int:
        """The most round trips no two of which overlap (earliest-end-first greedy is optimal)."""
        count, end = 0, float("-inf")
        for start, stop in sorted(self.intervals, key=lambda iv: iv[1]):
            if start >= end:
                count, end = count + 1, stop
        return count

    def as_dict(self) -> dict[str, int]:
        return {
            "connections": self.connections,
            "requests": self.requests,
            "round_trips": self.round_trips,
            "serial_round_trips": self.serial_round_trips,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
        }


class RequestCounter:
    """Finds HTTP/1.x request lines in a client's byte stream, skipping bodies by their framing."""

    def __init__(self, on_request: Callable[[bytes], None] | None = None) -> None:
        self.count = 0
        self.on_request = on_request
        self._buf = bytearray()
        self._body = 0  # bytes of a Content-Length body still to skip
        self._chunked = False  # inside a chunked body: parsing chunk-size lines
        self._chunk_left = 0  # data bytes (+ CRLF) of the current chunk still to skip
        self._trailers = False

    def feed(self, data: bytes) -> None:
        if self._body and not self._buf:  # the bulk of an upload: skipped without copying
            take = min(self._body, len(data))
            self._body -= take
            data = data[take:]
        self._buf += data
        while self._step():
            pass

    def _line(self) -> bytes | None:
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > 1 << 20:  # not HTTP: stop parsing, stop growing
                self._buf.clear()
            return None
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def _step(self) -> bool:
        if self._body:
            take = min(self._body, len(self._buf))
            del self._buf[:take]
            self._body -= take
            return bool(take) and bool(self._buf)
        if self._chunked:
            if self._chunk_left:
                take = min(self._chunk_left, len(self._buf))
                del self._buf[:take]
                self._chunk_left -= take
                return bool(take) and bool(self._buf)
            line = self._line()
            if line is None:
                return False
            if self._trailers:
                if not line:
                    self._chunked = self._trailers = False
                return True
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                self._trailers = True
            else:
                self._chunk_left = size + 2
            return True
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > 1 << 20:
                self._buf.clear()
            return False
        head = bytes(self._buf[:end]).split(b"\r\n")
        del self._buf[: end + 4]
        if not _REQUEST_LINE.match(head[0]):
            return True
        self.count += 1
        if self.on_request is not None:
            self.on_request(head[0])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self._chunked = True
        elif headers.get(b"content-length", b"0").isdigit():
            self._body = int(headers.get(b"content-length", b"0"))
        return True


class _Direction:
    """One direction of one connection: a reader that timestamps chunks, a writer that releases them."""

    def __init__(self, net: Netem, conn: _Conn, upstream: bool, not_before: float) -> None:
        self.net, self.conn, self.upstream = net, conn, upstream
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.queued = 0
        self.last_release = float("-inf")
        self.not_before = not_before
        self.ready = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()

    def release_time(self, arrival: float, size: int) -> float:
        p = self.net.profile
        start = max(arrival, self.not_before) + p.delay
        release = max(start, self.last_release)
        if p.bandwidth:
            release += size / p.bandwidth
        self.last_release = release
        return release

    async def read(self, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await reader.read(CHUNK)
                now = loop.time()
                if not data:
                    self.queue.append((self.release_time(now, 0), None))
                    self.ready.set()
                    return
                if self.upstream:
                    self.conn.client_sent(now)
                    self.net.counter_feed(self.conn, data)
                self.queue.append((self.release_time(now, len(data)), data))
                self.queued += len(data)
                self.ready.set()
                if self.queued > self.net.buffer:
                    self.room.clear()
                    await self.room.wait()
        except (ConnectionError, OSError):
            self.queue.append((loop.time(), None))
            self.ready.set()

    async def forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """With no delay and no cap: each chunk written on as soon as it is read (no queue, no
        second task), counted the same way."""
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(CHUNK):
                now = loop.time()
                if self.upstream:
                    self.conn.client_sent(now)
                    self.net.counter_feed(self.conn, data)
                else:
                    self.conn.server_answered(now)
                writer.write(data)
                await writer.drain()
                self.net.count_bytes(self.upstream, len(data))
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            self.conn.abort()

    async def write(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not self.queue:
                    self.ready.clear()
                    await self.ready.wait()
                release, data = self.queue.popleft()
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                if not self.upstream:
                    self.conn.server_answered(release)
                writer.write(data)
                await writer.drain()
                self.queued -= len(data)
                if self.queued <= self.net.buffer:
                    self.room.set()
                self.net.count_bytes(self.upstream, len(data))
        except (ConnectionError, OSError):
            self.conn.abort()
        finally:
            self.room.set()


class _Conn:
    def __init__(self, net: Netem, accepted: float) -> None:
        self.net = net
        self.number = net.stats().connections
        self.counter = RequestCounter(self._traced if net.trace is not None else None)
        self.not_before = accepted + net.profile.rtt
        self.turn_start: float | None = None
        self.writers: list[asyncio.StreamWriter] = []
        net.add_round_trip(accepted, self.not_before)

    def abort(self) -> None:
        """One side is gone: close both, so that every reader and writer of the connection ends."""
        for w in self.writers:
            w.close()

    def _traced(self, line: bytes) -> None:
        assert self.net.trace is not None and self.net._loop is not None
        self.net.trace.append((self.net._loop.time(), self.number, line.decode(errors="replace")))

    def client_sent(self, now: float) -> None:
        if self.turn_start is None:
            self.turn_start = max(now, self.not_before)

    def server_answered(self, at: float) -> None:
        if self.turn_start is not None:
            self.net.add_round_trip(self.turn_start, at)
            self.turn_start = None


class Netem:
    """The proxy, on a free loopback port, in a thread of its own with its own event loop."""

    def __init__(
        self, upstream: tuple[str, int], profile: Profile, host: str = "127.0.0.1", *, trace: bool = False
    ) -> None:
        self.upstream, self.profile, self.host = upstream, profile, host
        #: With ``trace``: (time, connection number, request line) of every request, in order.
        self.trace: list[tuple[float, int, str]] | None = [] if trace else None
        bdp = int(2 * (profile.bandwidth or 0) * profile.rtt)
        self.buffer = max(MIN_BUFFER, bdp)
        self._stats = Stats()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    # -- counting (called from the loop's thread; read from others under the lock) -------------
    def counter_feed(self, conn: _Conn, data: bytes) -> None:
        before = conn.counter.count
        conn.counter.feed(data)
        if conn.counter.count != before:
            with self._lock:
                self._stats.requests += conn.counter.count - before

    def add_round_trip(self, start: float, stop: float) -> None:
        with self._lock:
            self._stats.round_trips += 1
            self._stats.intervals.append((start, stop))

    def count_bytes(self, upstream: bool, n: int) -> None:
        with self._lock:
            if upstream:
                self._stats.bytes_up += n
            else:
                self._stats.bytes_down += n

    def stats(self) -> Stats:
        with self._lock:
            s = self._stats
            return Stats(s.connections, s.requests, s.round_trips, s.bytes_up, s.bytes_down, list(s.intervals))

    def reset(self) -> Stats:
        """The counts so far, and start counting again from zero."""
        with self._lock:
            old, self._stats = self._stats, Stats()
            return old

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- the proxy -----------------------------------------------------------------------------
    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        with self._lock:
            self._stats.connections += 1
        conn = _Conn(self, accepted)
        try:
            sreader, swriter = await asyncio.open_connection(*self.upstream, limit=CHUNK * 4)
        except OSError:
            cwriter.close()
            return
        for w in (cwriter, swriter):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.writers = [cwriter, swriter]
        up = _Direction(self, conn, True, conn.not_before)
        down = _Direction(self, conn, False, 0.0)
        try:
            if not self.profile.rtt and not self.profile.bandwidth:
                await asyncio.gather(up.forward(creader, swriter), down.forward(sreader, cwriter))
            else:
                await asyncio.gather(up.read(creader), up.write(swriter), down.read(sreader), down.write(cwriter))
        finally:
            for w in (cwriter, swriter):
                w.close()

    def _run(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, self.host, 0, backlog=512, limit=CHUNK * 4)
            self.port = self._server.sockets[0].getsockname()[1]

        loop.run_until_complete(start())
        started.set()
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def start(self) -> Netem:
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="netem", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the network emulator did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> Netem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """Run a proxy from the command line: ``python netem.py HOST:PORT PROFILE`` (Ctrl-C stops)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("upstream", help="HOST:PORT of the server (e.g. SeaweedFS's S3 port)")
    parser.add_argument("profile", choices=sorted(PROFILES))
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    with Netem((host, int(port)), PROFILES[args.profile]) as net:
        print(f"{net.endpoint} -> {args.upstream}: {net.profile.describe()}", flush=True)
        try:
            while True:
                time.sleep(5)
                print(net.stats().as_dict(), flush=True)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
