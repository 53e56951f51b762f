"""The flow-controlled send side of one HTTP/2 connection, shared by downstream and upstream.

Theory of operation: `h2.H2Connection` is the sans-I/O core; this class owns its transport.
What a stream sends is queued per stream (HEADERS, DATA, trailers, in order) and leaves only
as the peer's flow-control windows allow, so the proxy never holds more than one window per
stream. Bytes *received* are acknowledged (WINDOW_UPDATE) only once the other side of the
proxy has actually sent them on (`on_sent` callbacks), and acknowledgements wait while this
connection's transport is paused: backpressure crosses the proxy in both directions.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, cast

from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import H2Error
from h2.settings import SettingCodes

from hyphal.proxy.h2.grpc import H2Headers

log = logging.getLogger(__name__)

OnSent = Callable[[], None]
# (headers or None, data, end_stream, on_sent): headers set = a HEADERS frame (trailers too).
_Item = tuple[H2Headers | None, bytes, bool, OnSent | None]

WINDOW = 1 << 20  # our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE)
CONNECTION_WINDOW = 16 << 20
MAX_STREAMS = 1024


class GracefulH2Connection(H2Connection):
    """An H2Connection that keeps working after a GOAWAY, in both directions.

    The `h2` library moves the whole connection to CLOSED when it sends or receives a GOAWAY,
    after which every frame of the streams still in flight is a ProtocolError. RFC 9113
    section 6.8 says those streams complete normally: only streams above the GOAWAY's
    last-stream-id are refused. So a received GOAWAY is reported (ConnectionTerminated) and
    the state put back, and `goaway()` sends one without closing; the callers stop opening
    (or accepting) new streams themselves. `close_connection()` still closes for good.
    """

    def _receive_goaway_frame(self, frame: Any) -> Any:
        state = self.state_machine.state
        result = super()._receive_goaway_frame(frame)
        if state is not ConnectionState.CLOSED:
            self.state_machine.state = state
        return result

    def goaway(self, last_stream_id: int, error_code: ErrorCodes = ErrorCodes.NO_ERROR) -> None:
        """Queue a GOAWAY naming the last stream that will be processed; stay open."""
        state = self.state_machine.state
        self.close_connection(error_code, last_stream_id=last_stream_id)
        self.state_machine.state = state


class H2Endpoint(asyncio.Protocol):
    """One HTTP/2 connection: transport, h2 core, per-stream send queues."""

    def __init__(self, conn: H2Connection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.write_paused = False
        self._queues: dict[int, collections.deque[_Item]] = {}
        self._held: list[tuple[int, int]] = []  # acks waiting for the transport to drain

    def start(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
                                   SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS})
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()

    # ---------------------------------------------------------------- sending
    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def send_headers(self, stream_id: int, headers: H2Headers, end: bool) -> None:
        self._enqueue(stream_id, (headers, b"", end, None))

    def send_data(self, stream_id: int, data: bytes, end: bool,
                  on_sent: OnSent | None = None) -> None:
        self._enqueue(stream_id, (None, data, end, on_sent))

    def _enqueue(self, stream_id: int, item: _Item) -> None:
        queue = self._queues.get(stream_id)
        if queue is None:
            queue = self._queues[stream_id] = collections.deque()
        queue.append(item)
        if len(queue) == 1:
            self._pump(stream_id)
            self.flush()

    def _pump(self, stream_id: int) -> None:
        queue = self._queues.get(stream_id)
        conn = self.conn
        while queue:
            headers, data, end, on_sent = queue[0]
            try:
                if headers is not None:
                    conn.send_headers(stream_id, headers, end_stream=end)
                else:
                    while True:
                        room = min(conn.local_flow_control_window(stream_id),
                                   conn.max_outbound_frame_size)
                        if len(data) <= room:
                            conn.send_data(stream_id, data, end_stream=end)
                            break
                        if room <= 0:
                            queue[0] = (None, data, end, on_sent)
                            return
                        conn.send_data(stream_id, data[:room])
                        data = data[room:]
            except H2Error as exc:  # the stream closed or was reset: nothing more to send
                log.debug("stream %d: dropping queued frames: %s", stream_id, exc)
                self.forget_stream(stream_id)
                return
            queue.popleft()
            if on_sent is not None:
                on_sent()
        self._queues.pop(stream_id, None)

    def pump_all(self) -> None:
        for stream_id in list(self._queues):
            self._pump(stream_id)

    def queued(self, stream_id: int) -> bool:
        return bool(self._queues.get(stream_id))

    def reset(self, stream_id: int, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        self.forget_stream(stream_id)
        try:
            self.conn.reset_stream(stream_id, code)
        except H2Error:
            return
        self.flush()

    # ---------------------------------------------------------------- receiving
    def ack(self, stream_id: int, size: int) -> None:
        """Give `size` flow-controlled bytes of `stream_id` back to the peer."""
        if size <= 0:
            return
        if self.write_paused:
            self._held.append((stream_id, size))
            return
        try:
            self.conn.acknowledge_received_data(size, stream_id)
        except H2Error:
            return
        self.flush()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        held, self._held = self._held, []
        for stream_id, size in held:
            self.ack(stream_id, size)

    def forget_stream(self, stream_id: int) -> None:
        """Drop what the stream still had to send; its sources get their window back."""
        queue = self._queues.pop(stream_id, None)
        for _headers, _data, _end, on_sent in queue or ():
            if on_sent is not None:
                on_sent()

    def forget_all(self) -> None:
        for stream_id in list(self._queues):
            self.forget_stream(stream_id)
