from enclaverec.transport.proto import tensors_pb2 as _tensors_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DirectiveKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTIVE_UNSPECIFIED: _ClassVar[DirectiveKind]
    WAIT: _ClassVar[DirectiveKind]
    CONTINUE: _ClassVar[DirectiveKind]
    STOP: _ClassVar[DirectiveKind]
DIRECTIVE_UNSPECIFIED: DirectiveKind
WAIT: DirectiveKind
CONTINUE: DirectiveKind
STOP: DirectiveKind

class SubmitRequest(_message.Message):
    __slots__ = ("job", "dataset_id", "data_key", "server_certificate_sha256", "owner_signature", "paramserver_mrenclaves")
    class ParamserverMrenclavesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    JOB_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    SERVER_CERTIFICATE_SHA256_FIELD_NUMBER: _ClassVar[int]
    OWNER_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PARAMSERVER_MRENCLAVES_FIELD_NUMBER: _ClassVar[int]
    job: str
    dataset_id: bytes
    data_key: bytes
    server_certificate_sha256: bytes
    owner_signature: bytes
    paramserver_mrenclaves: _containers.ScalarMap[str, bytes]
    def __init__(self, job: _Optional[str] = ..., dataset_id: _Optional[bytes] = ..., data_key: _Optional[bytes] = ..., server_certificate_sha256: _Optional[bytes] = ..., owner_signature: _Optional[bytes] = ..., paramserver_mrenclaves: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class SubmitReply(_message.Message):
    __slots__ = ("already_submitted",)
    ALREADY_SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    already_submitted: bool
    def __init__(self, already_submitted: _Optional[bool] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("status_json",)
    STATUS_JSON_FIELD_NUMBER: _ClassVar[int]
    status_json: str
    def __init__(self, status_json: _Optional[str] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReleaseKeyRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: str
    def __init__(self, job: _Optional[str] = ...) -> None: ...

class ReleaseKeyReply(_message.Message):
    __slots__ = ("data_key", "dataset_id", "paramserver_mrenclaves")
    class ParamserverMrenclavesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMSERVER_MRENCLAVES_FIELD_NUMBER: _ClassVar[int]
    data_key: bytes
    dataset_id: bytes
    paramserver_mrenclaves: _containers.ScalarMap[str, bytes]
    def __init__(self, data_key: _Optional[bytes] = ..., dataset_id: _Optional[bytes] = ..., paramserver_mrenclaves: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class EvaluationPayload(_message.Message):
    __slots__ = ("epoch", "steps", "train_seconds", "train_samples", "validation_scores", "validation_labels", "test_scores", "test_labels", "test_row_ids", "bytes_pushed", "bytes_pulled")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SCORES_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LABELS_FIELD_NUMBER: _ClassVar[int]
    TEST_SCORES_FIELD_NUMBER: _ClassVar[int]
    TEST_LABELS_FIELD_NUMBER: _ClassVar[int]
    TEST_ROW_IDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_PUSHED_FIELD_NUMBER: _ClassVar[int]
    BYTES_PULLED_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    steps: int
    train_seconds: float
    train_samples: int
    validation_scores: bytes
    validation_labels: bytes
    test_scores: bytes
    test_labels: bytes
    test_row_ids: bytes
    bytes_pushed: int
    bytes_pulled: int
    def __init__(self, epoch: _Optional[int] = ..., steps: _Optional[int] = ..., train_seconds: _Optional[float] = ..., train_samples: _Optional[int] = ..., validation_scores: _Optional[bytes] = ..., validation_labels: _Optional[bytes] = ..., test_scores: _Optional[bytes] = ..., test_labels: _Optional[bytes] = ..., test_row_ids: _Optional[bytes] = ..., bytes_pushed: _Optional[int] = ..., bytes_pulled: _Optional[int] = ...) -> None: ...

class EvaluationReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DirectiveRequest(_message.Message):
    __slots__ = ("epoch", "wait_seconds")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    wait_seconds: float
    def __init__(self, epoch: _Optional[int] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class Directive(_message.Message):
    __slots__ = ("kind", "best_epoch")
    KIND_FIELD_NUMBER: _ClassVar[int]
    BEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    kind: DirectiveKind
    best_epoch: int
    def __init__(self, kind: _Optional[_Union[DirectiveKind, str]] = ..., best_epoch: _Optional[int] = ...) -> None: ...

class ModelShardReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
