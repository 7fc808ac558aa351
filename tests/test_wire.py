"""Batch framing: frame_batch gives the exact bytes protobuf would for a MessageBatch."""

from __future__ import annotations

from hello_protocol import hello_pb2 as pb
from hello_protocol.wire import PresenceRecord, frame_batch


def test_framing_matches_protobuf_for_every_length_class_twice() -> None:
    """Lengths across the varint boundaries, each framed twice (the second from the cache)."""
    messages = [
        pb.Message(id="a", roomID="r", message="y" * n, seq=n + 1)
        for n in (0, 1, 100, 116, 117, 300, 16_500, 70_000)
    ]
    bodies = [m.SerializeToString() for m in messages]
    expected = pb.MessageBatch(messages=messages).SerializeToString()
    assert frame_batch(bodies) == expected
    assert frame_batch(bodies) == expected


def test_presence_records_are_framed_as_field_two() -> None:
    event = pb.PresenceEvent(user=pb.User(id="u"), kind=pb.PresenceEvent.JOINED)
    message = pb.Message(id="a", roomID="r", message="hi")
    framed = frame_batch([message.SerializeToString(), PresenceRecord(event.SerializeToString())])
    batch = pb.MessageBatch.FromString(framed)
    assert list(batch.messages) == [message]
    assert list(batch.presence) == [event]
