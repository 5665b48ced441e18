from enclaverec.transport.proto import tensors_pb2 as _tensors_pb2
from enclaverec.transport.proto import paramservice_pb2 as _paramservice_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[TaskKind]
    FIT: _ClassVar[TaskKind]
    EVALUATE: _ClassVar[TaskKind]
    WAIT: _ClassVar[TaskKind]
    FINISHED: _ClassVar[TaskKind]
TASK_UNSPECIFIED: TaskKind
FIT: TaskKind
EVALUATE: TaskKind
WAIT: TaskKind
FINISHED: TaskKind

class PushThenTaskRequest(_message.Message):
    __slots__ = ("update", "next")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    update: _paramservice_pb2.UpdatePayload
    next: TaskRequest
    def __init__(self, update: _Optional[_Union[_paramservice_pb2.UpdatePayload, _Mapping]] = ..., next: _Optional[_Union[TaskRequest, _Mapping]] = ...) -> None: ...

class EvaluationThenTaskRequest(_message.Message):
    __slots__ = ("evaluation", "next")
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    evaluation: EvaluationPayload
    next: TaskRequest
    def __init__(self, evaluation: _Optional[_Union[EvaluationPayload, _Mapping]] = ..., next: _Optional[_Union[TaskRequest, _Mapping]] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Plan(_message.Message):
    __slots__ = ("plan_toml", "layout_json", "federation", "rounds")
    PLAN_TOML_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_JSON_FIELD_NUMBER: _ClassVar[int]
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    plan_toml: bytes
    layout_json: bytes
    federation: str
    rounds: int
    def __init__(self, plan_toml: _Optional[bytes] = ..., layout_json: _Optional[bytes] = ..., federation: _Optional[str] = ..., rounds: _Optional[int] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("wait_seconds", "carry_model", "held_version", "held_incarnation")
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CARRY_MODEL_FIELD_NUMBER: _ClassVar[int]
    HELD_VERSION_FIELD_NUMBER: _ClassVar[int]
    HELD_INCARNATION_FIELD_NUMBER: _ClassVar[int]
    wait_seconds: float
    carry_model: bool
    held_version: int
    held_incarnation: str
    def __init__(self, wait_seconds: _Optional[float] = ..., carry_model: _Optional[bool] = ..., held_version: _Optional[int] = ..., held_incarnation: _Optional[str] = ...) -> None: ...

class FitInstructions(_message.Message):
    __slots__ = ("epochs", "batch_size", "learning_rate", "proximal_mu", "seed")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    PROXIMAL_MU_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    batch_size: int
    learning_rate: float
    proximal_mu: float
    seed: int
    def __init__(self, epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., proximal_mu: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("kind", "round", "attempt", "model_version", "model_incarnation", "fit", "model")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_INCARNATION_FIELD_NUMBER: _ClassVar[int]
    FIT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    kind: TaskKind
    round: int
    attempt: int
    model_version: int
    model_incarnation: str
    fit: FitInstructions
    model: bytes
    def __init__(self, kind: _Optional[_Union[TaskKind, str]] = ..., round: _Optional[int] = ..., attempt: _Optional[int] = ..., model_version: _Optional[int] = ..., model_incarnation: _Optional[str] = ..., fit: _Optional[_Union[FitInstructions, _Mapping]] = ..., model: _Optional[bytes] = ...) -> None: ...

class EvaluationPayload(_message.Message):
    __slots__ = ("round", "model_version", "incarnation", "validation_scores", "validation_labels", "test_scores", "test_labels", "test_row_ids")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SCORES_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LABELS_FIELD_NUMBER: _ClassVar[int]
    TEST_SCORES_FIELD_NUMBER: _ClassVar[int]
    TEST_LABELS_FIELD_NUMBER: _ClassVar[int]
    TEST_ROW_IDS_FIELD_NUMBER: _ClassVar[int]
    round: int
    model_version: int
    incarnation: str
    validation_scores: bytes
    validation_labels: bytes
    test_scores: bytes
    test_labels: bytes
    test_row_ids: bytes
    def __init__(self, round: _Optional[int] = ..., model_version: _Optional[int] = ..., incarnation: _Optional[str] = ..., validation_scores: _Optional[bytes] = ..., validation_labels: _Optional[bytes] = ..., test_scores: _Optional[bytes] = ..., test_labels: _Optional[bytes] = ..., test_row_ids: _Optional[bytes] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("accepted", "message")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message: str
    def __init__(self, accepted: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...
