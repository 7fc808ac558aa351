import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class User(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("id", "roomID", "message", "timestamp", "seq", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROOMID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    roomID: str
    message: str
    timestamp: _timestamp_pb2.Timestamp
    seq: int
    name: str
    def __init__(self, id: _Optional[str] = ..., roomID: _Optional[str] = ..., message: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., seq: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("roomID", "user", "since_seq", "epoch", "history", "presence")
    ROOMID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SINCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    roomID: str
    user: User
    since_seq: int
    epoch: str
    history: int
    presence: bool
    def __init__(self, roomID: _Optional[str] = ..., user: _Optional[_Union[User, _Mapping]] = ..., since_seq: _Optional[int] = ..., epoch: _Optional[str] = ..., history: _Optional[int] = ..., presence: _Optional[bool] = ...) -> None: ...

class Exit(_message.Message):
    __slots__ = ("success", "message", "seq", "code")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    seq: int
    code: int
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., seq: _Optional[int] = ..., code: _Optional[int] = ...) -> None: ...

class MessageBatch(_message.Message):
    __slots__ = ("messages", "presence")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    presence: _containers.RepeatedCompositeFieldContainer[PresenceEvent]
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., presence: _Optional[_Iterable[_Union[PresenceEvent, _Mapping]]] = ...) -> None: ...

class PresenceEvent(_message.Message):
    __slots__ = ("user", "kind", "at")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[PresenceEvent.Kind]
        JOINED: _ClassVar[PresenceEvent.Kind]
        LEFT: _ClassVar[PresenceEvent.Kind]
    KIND_UNSPECIFIED: PresenceEvent.Kind
    JOINED: PresenceEvent.Kind
    LEFT: PresenceEvent.Kind
    USER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    user: User
    kind: PresenceEvent.Kind
    at: _timestamp_pb2.Timestamp
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., kind: _Optional[_Union[PresenceEvent.Kind, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RoomRequest(_message.Message):
    __slots__ = ("roomID",)
    ROOMID_FIELD_NUMBER: _ClassVar[int]
    roomID: str
    def __init__(self, roomID: _Optional[str] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("user", "sessions", "since")
    USER_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    user: User
    sessions: int
    since: _timestamp_pb2.Timestamp
    def __init__(self, user: _Optional[_Union[User, _Mapping]] = ..., sessions: _Optional[int] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MemberList(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...
