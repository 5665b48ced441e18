from enclaverec.transport.proto import tensors_pb2 as _tensors_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WhichModel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WHICH_UNSPECIFIED: _ClassVar[WhichModel]
    CURRENT: _ClassVar[WhichModel]
    BEST: _ClassVar[WhichModel]
WHICH_UNSPECIFIED: WhichModel
CURRENT: WhichModel
BEST: WhichModel

class PullRequest(_message.Message):
    __slots__ = ("which", "since_version", "incarnation")
    WHICH_FIELD_NUMBER: _ClassVar[int]
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    which: WhichModel
    since_version: int
    incarnation: str
    def __init__(self, which: _Optional[_Union[WhichModel, str]] = ..., since_version: _Optional[int] = ..., incarnation: _Optional[str] = ...) -> None: ...

class ModelPayload(_message.Message):
    __slots__ = ("version", "incarnation", "complete", "tag", "arrays")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    ARRAYS_FIELD_NUMBER: _ClassVar[int]
    version: int
    incarnation: str
    complete: bool
    tag: int
    arrays: _tensors_pb2.ArrayBundle
    def __init__(self, version: _Optional[int] = ..., incarnation: _Optional[str] = ..., complete: _Optional[bool] = ..., tag: _Optional[int] = ..., arrays: _Optional[_Union[_tensors_pb2.ArrayBundle, _Mapping]] = ...) -> None: ...

class UpdatePayload(_message.Message):
    __slots__ = ("step", "base_version", "incarnation", "num_samples", "train_loss", "train_seconds", "delta")
    STEP_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    step: int
    base_version: int
    incarnation: str
    num_samples: int
    train_loss: float
    train_seconds: float
    delta: _tensors_pb2.ArrayBundle
    def __init__(self, step: _Optional[int] = ..., base_version: _Optional[int] = ..., incarnation: _Optional[str] = ..., num_samples: _Optional[int] = ..., train_loss: _Optional[float] = ..., train_seconds: _Optional[float] = ..., delta: _Optional[_Union[_tensors_pb2.ArrayBundle, _Mapping]] = ...) -> None: ...

class PushReply(_message.Message):
    __slots__ = ("accepted", "message")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message: str
    def __init__(self, accepted: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...
