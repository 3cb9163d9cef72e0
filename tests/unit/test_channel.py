"""AttachChannel over a real unix socket pair: the engine's side is a plain socket.

The peer socket plays the Docker engine: it writes the HTTP answer to the attach request,
then Docker's multiplexed stream (8-byte header ``>BxxxI``: 1 stdout, 2 stderr) whose stdout
payloads carry the agent's length-prefixed JSON frames; it reads what the channel sends as
raw frames (stdin is not multiplexed). No part of the channel is faked.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import socket
import struct
import termios
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from sandbox.agent.agent import MAX_FRAME, FrameReader, encode_frame
from sandbox.errors import AgentError
from sandbox.server.backend import AttachChannel

T = TypeVar("T")

HEAD = (
    b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
    b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
)
STDOUT, STDERR = 1, 2
WAIT_S = 5.0  # a step that takes longer than this is hung, not slow


def mux(kind: int, payload: bytes) -> bytes:
    """One record of Docker's multiplexed stream, written from the format, not from backend.py."""
    return struct.pack(">BxxxI", kind, len(payload)) + payload


def run(test: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(test())


async def within(awaitable: Awaitable[T]) -> T:
    async with asyncio.timeout(WAIT_S):
        return await awaitable


class Peer:
    """The engine's end of the attach connection."""

    def __init__(self, sock: socket.socket, ours: socket.socket) -> None:
        self.sock = sock
        self._ours = ours
        self._loop = asyncio.get_running_loop()

    async def write(self, data: bytes) -> None:
        """Writes ``data`` and returns once the channel has read all of it (so the next
        write arrives in a ``data_received`` call of its own)."""
        await self._loop.sock_sendall(self.sock, data)
        async with asyncio.timeout(WAIT_S):
            while self._unread():
                await asyncio.sleep(0)

    def socket_buffers(self) -> int:
        """Bytes the kernel can hold between the two ends, about."""
        return self._ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) + self.sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF
        )

    def _unread(self) -> int:
        if self._ours.fileno() < 0:
            return 0
        count = array.array("i", [0])
        fcntl.ioctl(self._ours.fileno(), termios.FIONREAD, count)
        return count[0]

    async def read_frames(self, count: int) -> list[object]:
        """Reads from the channel until ``count`` whole frames arrived."""
        reader = FrameReader()
        frames: list[object] = []
        while len(frames) < count:
            data = await self._loop.sock_recv(self.sock, 1 << 16)
            assert data, "the channel closed before the frames arrived"
            frames += reader.feed(data)
        return frames

    def close(self) -> None:
        self.sock.close()


@contextlib.asynccontextmanager
async def attached(upgrade: bool = True) -> AsyncIterator[tuple[AttachChannel, Peer]]:
    """A channel connected to a peer socket; with ``upgrade``, the engine's answer is in."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    peer = Peer(theirs, ours)
    try:
        transport, channel = await loop.create_unix_connection(lambda: AttachChannel("c"), sock=ours)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    try:
        if upgrade:
            await peer.write(HEAD)
            assert await within(channel._head) == HEAD
        yield channel, peer
    finally:
        peer.close()
        channel.close()
        # Let the transport run connection_lost and close its socket before the loop goes.
        async with asyncio.timeout(WAIT_S):
            while ours.fileno() >= 0 or not transport.is_closing():
                await asyncio.sleep(0)


def frame(i: int, **extra: Any) -> dict[str, Any]:
    return {"op": "result", "id": f"r{i}", **extra}


# ------------------------------------------------------------------------------ reading


def test_head_and_frames_in_one_chunk() -> None:
    """The engine's answer and the first frames arriving in one read: the head is exposed
    exactly as written and the frames after it are decoded."""

    async def test() -> None:
        async with attached(upgrade=False) as (channel, peer):
            await peer.write(HEAD + mux(STDOUT, encode_frame(frame(1))) + mux(STDOUT, encode_frame(frame(2))))
            assert await within(channel._head) == HEAD
            assert await within(channel.recv()) == frame(1)
            assert await within(channel.recv()) == frame(2)

    run(test)


def test_frame_written_byte_by_byte() -> None:
    """Head, mux header, frame length and body each split at every byte (every read of the
    channel is one byte): the frame comes out whole, and only after its last byte."""

    async def test() -> None:
        async with attached(upgrade=False) as (channel, peer):
            message = frame(1, text="h\u00e9llo \U0001f600")  # multi-byte UTF-8 split too
            data = HEAD + mux(STDOUT, encode_frame(message))
            pending = asyncio.create_task(channel.recv())
            for i in range(len(data)):
                await peer.write(data[i : i + 1])
                assert channel._head.done() == (i >= len(HEAD) - 1)
                if i < len(data) - 1:
                    assert not pending.done(), f"recv returned after {i + 1} of {len(data)} bytes"
            assert await within(pending) == message

    run(test)


def test_frame_split_across_one_byte_mux_records() -> None:
    """Docker cuts the agent's stdout wherever its pipe reads end: a frame spread over many
    one-byte stdout records (with stderr records between them) decodes whole."""

    async def test() -> None:
        async with attached() as (channel, peer):
            message = frame(1, text="x" * 300)
            body = encode_frame(message)
            stream = b"".join(mux(STDOUT, body[i : i + 1]) + mux(STDERR, b"~") for i in range(len(body)))
            await peer.write(stream)
            assert await within(channel.recv()) == message

    run(test)


def test_several_frames_in_one_chunk_come_out_in_order() -> None:
    """Frames packed in one stdout record, spread over several records and ending mid-record
    all arrive, in the order written."""

    async def test() -> None:
        async with attached() as (channel, peer):
            frames = [frame(i, payload="y" * i) for i in range(10)]
            packed = b"".join(encode_frame(f) for f in frames[:5])
            tail = b"".join(encode_frame(f) for f in frames[5:])
            await peer.write(mux(STDOUT, packed) + mux(STDOUT, tail[:7]) + mux(STDOUT, tail[7:]))
            assert [await within(channel.recv()) for _ in frames] == frames

    run(test)


def test_stderr_is_kept_out_of_frames_and_its_tail_names_the_end() -> None:
    """stderr records between the pieces of a frame do not corrupt it; when the engine
    closes the stream, the AgentError carries the end of what the agent wrote to stderr."""

    async def test() -> None:
        async with attached() as (channel, peer):
            body = encode_frame(frame(1))
            await peer.write(
                mux(STDERR, b"noise " * 2000)  # more than the kept tail
                + mux(STDOUT, body[:3])
                + mux(STDERR, b"\x00\x00\x00\x05{}")  # looks like a frame; it is not one
                + mux(STDOUT, body[3:])
                + mux(STDERR, b"Traceback: the agent's last words")
            )
            assert await within(channel.recv()) == frame(1)
            peer.close()
            with pytest.raises(AgentError, match="stream ended") as info:
                await within(channel.recv())
            message = str(info.value)
            assert "agent stderr:" in message
            assert message.endswith("Traceback: the agent's last words")
            assert len(message) < 700, "the stderr tail in the error is bounded"

    run(test)


def test_frames_decoded_before_the_end_stay_readable_then_recv_keeps_raising() -> None:
    """Frames received before the peer closed are still returned, in order; after them
    every recv raises AgentError, however many times it is called."""

    async def test() -> None:
        async with attached() as (channel, peer):
            await peer.write(mux(STDOUT, encode_frame(frame(1)) + encode_frame(frame(2))))
            peer.close()
            assert await within(channel.recv()) == frame(1)
            assert await within(channel.recv()) == frame(2)
            for _ in range(3):
                with pytest.raises(AgentError, match="stream ended"):
                    await within(channel.recv())

    run(test)


def test_engine_closing_before_answering_fails_the_head() -> None:
    """A connection that closes mid-answer fails ``_head`` (what the attach call awaits)
    instead of leaving it pending, and recv raises."""

    async def test() -> None:
        async with attached(upgrade=False) as (channel, peer):
            await peer.write(HEAD[:10])
            peer.close()
            with pytest.raises(ConnectionResetError):
                await within(channel._head)
            with pytest.raises(AgentError):
                await within(channel.recv())

    run(test)


# ------------------------------------------------------------------------------ broken streams


def test_frame_length_over_max_frame_ends_the_stream() -> None:
    """A frame length above MAX_FRAME is a broken stream: recv raises AgentError at once
    (the channel does not wait for 64 MiB that will never come), on_lost fires, and
    well-formed data after it is not read."""

    async def test() -> None:
        async with attached() as (channel, peer):
            lost: list[str] = []
            channel.on_lost(lambda: lost.append("lost"))
            pending = asyncio.create_task(channel.recv())
            await peer.write(mux(STDOUT, struct.pack(">I", MAX_FRAME + 1) + b"{"))
            with pytest.raises(AgentError, match="exceeds"):
                await within(pending)
            assert lost == ["lost"]
            await peer.write(mux(STDOUT, encode_frame(frame(1))))
            with pytest.raises(AgentError, match="exceeds"):
                await within(channel.recv())
            assert lost == ["lost"]

    run(test)


def test_frame_that_is_not_json_ends_the_stream() -> None:
    """A frame whose body is not JSON ends the stream with AgentError, never a crash of
    the event loop's reader."""

    async def test() -> None:
        async with attached() as (channel, peer):
            await peer.write(mux(STDOUT, struct.pack(">I", 5) + b"{nope"))
            with pytest.raises(AgentError, match="broke"):
                await within(channel.recv())

    run(test)


def test_frame_before_a_broken_one_in_the_same_record_stays_readable() -> None:
    """A whole frame followed, in the same stdout record, by a length over MAX_FRAME stays
    readable before the stream's error, as it does when the two arrive in separate
    records (see the next test): what the pool sees does not depend on where Docker cut
    the agent's stdout."""

    async def test() -> None:
        async with attached() as (channel, peer):
            await peer.write(mux(STDOUT, encode_frame(frame(1)) + struct.pack(">I", MAX_FRAME + 1)))
            assert await within(channel.recv()) == frame(1)

    run(test)


def test_frame_before_a_broken_record_stays_readable() -> None:
    """A whole frame in its own stdout record before a broken one is returned, then the
    stream's end is raised."""

    async def test() -> None:
        async with attached() as (channel, peer):
            await peer.write(mux(STDOUT, encode_frame(frame(1))) + mux(STDOUT, struct.pack(">I", MAX_FRAME + 1)))
            assert await within(channel.recv()) == frame(1)
            with pytest.raises(AgentError, match="exceeds"):
                await within(channel.recv())

    run(test)


# ------------------------------------------------------------------------------ writing


def test_send_of_a_frame_larger_than_the_socket_buffer_waits_then_arrives_whole() -> None:
    """A frame far larger than the socket's buffers pauses the transport: send waits while
    the engine does not read, and returns once it has; the engine gets the frame whole."""

    async def test() -> None:
        async with attached() as (channel, peer):
            size = 4 * peer.socket_buffers() + (1 << 20)
            message = {"op": "run", "job": {"source": "z" * size, "text": "\u00e9" * 1000}}
            sending = asyncio.create_task(channel.send(message))
            await asyncio.sleep(0.05)
            assert not sending.done(), "send returned while the engine held the data: no flow control"
            received = asyncio.create_task(peer.read_frames(1))
            await within(sending)
            assert await within(received) == [message]
            await channel.send({"op": "hello"})  # the channel still writes after a pause
            assert await within(peer.read_frames(1)) == [{"op": "hello"}]

    run(test)


def test_send_after_close_raises() -> None:
    """Writing to a closed channel is an AgentError, not a silent drop."""

    async def test() -> None:
        async with attached() as (channel, _peer):
            channel.close()
            with pytest.raises(AgentError, match="closed"):
                await channel.send({"op": "hello"})

    run(test)


def test_close_fails_a_send_waiting_for_room() -> None:
    """close() while a send waits for the engine to read fails that send at once: a stuck
    agent that stops reading stdin does not hang the send until the container is removed
    (the transport, closing with a full buffer, would only report the connection lost
    once the peer reads everything or goes away)."""

    async def test() -> None:
        async with attached() as (channel, _peer):
            sending = asyncio.create_task(channel.send({"source": "z" * (8 << 20)}))
            await asyncio.sleep(0.05)
            assert not sending.done()
            channel.close()
            try:
                async with asyncio.timeout(1.0):
                    with pytest.raises(AgentError):
                        await sending
            finally:
                sending.cancel()

    run(test)


def test_cancelling_one_waiting_send_leaves_the_others_waiting() -> None:
    """Two sends waiting for room each wait on a future of their own: cancelling one task
    leaves the other waiting, and it completes once the peer reads."""

    async def test() -> None:
        async with attached() as (channel, peer):
            first = asyncio.create_task(channel.send({"source": "z" * (8 << 20)}))
            second = asyncio.create_task(channel.send({"op": "hello"}))
            await asyncio.sleep(0.05)
            assert not first.done() and not second.done()
            first.cancel()
            await asyncio.sleep(0.05)
            try:
                assert not second.cancelled(), "the second send was cancelled with the first"
                received = asyncio.create_task(peer.read_frames(2))
                await within(second)
                await within(received)
            finally:
                second.cancel()

    run(test)


# ------------------------------------------------------------------------------ ending


def test_close_fails_a_pending_recv_and_does_not_call_on_lost() -> None:
    """close() wakes a recv waiting for a frame with AgentError; on_lost stays silent, also
    when the engine's side goes away afterwards."""

    async def test() -> None:
        async with attached() as (channel, peer):
            lost: list[str] = []
            channel.on_lost(lambda: lost.append("lost"))
            pending = asyncio.create_task(channel.recv())
            await asyncio.sleep(0)
            assert not pending.done()
            channel.close()
            with pytest.raises(AgentError, match="channel closed"):
                await within(pending)
            peer.close()
            for _ in range(5):
                await asyncio.sleep(0)
            with pytest.raises(AgentError, match="channel closed"):
                await within(channel.recv())
            assert lost == []

    run(test)


def test_peer_close_calls_every_on_lost_callback_exactly_once() -> None:
    """The engine closing the stream calls each on_lost callback once, and wakes a pending
    recv; a later close() and more recv calls do not call them again."""

    async def test() -> None:
        async with attached() as (channel, peer):
            lost: list[str] = []
            channel.on_lost(lambda: lost.append("a"))
            channel.on_lost(lambda: lost.append("b"))
            pending = asyncio.create_task(channel.recv())
            await asyncio.sleep(0)
            peer.close()
            with pytest.raises(AgentError, match="stream ended"):
                await within(pending)
            channel.close()
            with pytest.raises(AgentError):
                await within(channel.recv())
            assert lost == ["a", "b"]

    run(test)
