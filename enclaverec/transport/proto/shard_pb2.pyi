from enclaverec.transport.proto import tensors_pb2 as _tensors_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TableRows(_message.Message):
    __slots__ = ("name", "row_ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROW_IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    row_ids: bytes
    def __init__(self, name: _Optional[str] = ..., row_ids: _Optional[bytes] = ...) -> None: ...

class RowRequest(_message.Message):
    __slots__ = ("step", "tables", "dense", "wait_seconds")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    step: int
    tables: _containers.RepeatedCompositeFieldContainer[TableRows]
    dense: bool
    wait_seconds: float
    def __init__(self, step: _Optional[int] = ..., tables: _Optional[_Iterable[_Union[TableRows, _Mapping]]] = ..., dense: _Optional[bool] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class RowsPayload(_message.Message):
    __slots__ = ("applied_step", "incarnation", "arrays", "waiting", "waited_seconds")
    APPLIED_STEP_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    ARRAYS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    WAITED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    applied_step: int
    incarnation: str
    arrays: _tensors_pb2.ArrayBundle
    waiting: bool
    waited_seconds: float
    def __init__(self, applied_step: _Optional[int] = ..., incarnation: _Optional[str] = ..., arrays: _Optional[_Union[_tensors_pb2.ArrayBundle, _Mapping]] = ..., waiting: _Optional[bool] = ..., waited_seconds: _Optional[float] = ...) -> None: ...

class GradientPayload(_message.Message):
    __slots__ = ("step", "rows", "loss_sum", "pulled_step", "gradients")
    STEP_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    LOSS_SUM_FIELD_NUMBER: _ClassVar[int]
    PULLED_STEP_FIELD_NUMBER: _ClassVar[int]
    GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    step: int
    rows: int
    loss_sum: float
    pulled_step: int
    gradients: _tensors_pb2.ArrayBundle
    def __init__(self, step: _Optional[int] = ..., rows: _Optional[int] = ..., loss_sum: _Optional[float] = ..., pulled_step: _Optional[int] = ..., gradients: _Optional[_Union[_tensors_pb2.ArrayBundle, _Mapping]] = ...) -> None: ...

class PushPullRequest(_message.Message):
    __slots__ = ("push", "pull")
    PUSH_FIELD_NUMBER: _ClassVar[int]
    PULL_FIELD_NUMBER: _ClassVar[int]
    push: GradientPayload
    pull: RowRequest
    def __init__(self, push: _Optional[_Union[GradientPayload, _Mapping]] = ..., pull: _Optional[_Union[RowRequest, _Mapping]] = ...) -> None: ...

class PushGradientsReply(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    def __init__(self, accepted: _Optional[bool] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("step", "wait_seconds")
    STEP_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    step: int
    wait_seconds: float
    def __init__(self, step: _Optional[int] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class StepReply(_message.Message):
    __slots__ = ("reached", "applied_step")
    REACHED_FIELD_NUMBER: _ClassVar[int]
    APPLIED_STEP_FIELD_NUMBER: _ClassVar[int]
    reached: bool
    applied_step: int
    def __init__(self, reached: _Optional[bool] = ..., applied_step: _Optional[int] = ...) -> None: ...

class ShardRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
