from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ChallengeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ChallengeReply(_message.Message):
    __slots__ = ("nonce", "expires_unix")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    expires_unix: int
    def __init__(self, nonce: _Optional[bytes] = ..., expires_unix: _Optional[int] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("party_id", "nonce", "csr", "server_certificate_sha256", "membership_signature", "evidence_certificate")
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CSR_FIELD_NUMBER: _ClassVar[int]
    SERVER_CERTIFICATE_SHA256_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    party_id: str
    nonce: bytes
    csr: bytes
    server_certificate_sha256: bytes
    membership_signature: bytes
    evidence_certificate: bytes
    def __init__(self, party_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., csr: _Optional[bytes] = ..., server_certificate_sha256: _Optional[bytes] = ..., membership_signature: _Optional[bytes] = ..., evidence_certificate: _Optional[bytes] = ...) -> None: ...

class EnrollReply(_message.Message):
    __slots__ = ("certificate", "ca_certificate")
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    CA_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    certificate: bytes
    ca_certificate: bytes
    def __init__(self, certificate: _Optional[bytes] = ..., ca_certificate: _Optional[bytes] = ...) -> None: ...
