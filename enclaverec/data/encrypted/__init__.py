"""Encrypted data sets: chunked AES-256-GCM files of whole Criteo lines, readable at random.

Split by job: :mod:`.format` (keys, header, chunk layout: what both sides share),
:mod:`.writer` (the data owner's side, encrypting files) and :mod:`.reader` (reading and
authenticating chunks, in the owner's tools and in the enclaves that train). Parsing the
decrypted lines into batches is the data pipeline's (:mod:`enclaverec.data.batching`).
``docs/storage.md`` describes the file format and each field's threat.

The names below are the format's public API, so ``from enclaverec.data import encrypted``
gives all of it; code that only reads imports :mod:`.reader` and :mod:`.format`.
"""

from __future__ import annotations

from enclaverec.data.encrypted.format import (
    DEFAULT_CHUNK_SIZE,
    ENCRYPTED_SUFFIX,
    MAGIC,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    VERSION,
    DataSetKey,
    EncryptedFileHeader,
    unwrap_data_key,
)
from enclaverec.data.encrypted.reader import (
    EncryptedDataReader,
    VerificationSummary,
    decrypt_to_file,
    describe_encrypted_file,
    read_unverified_header,
)
from enclaverec.data.encrypted.writer import (
    EncryptedFileInfo,
    encrypt_file,
    encrypt_files,
    encrypt_stream,
    plaintext_name,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ENCRYPTED_SUFFIX",
    "MAGIC",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "VERSION",
    "DataSetKey",
    "EncryptedDataReader",
    "EncryptedFileHeader",
    "EncryptedFileInfo",
    "VerificationSummary",
    "decrypt_to_file",
    "describe_encrypted_file",
    "encrypt_file",
    "encrypt_files",
    "encrypt_stream",
    "plaintext_name",
    "read_unverified_header",
    "unwrap_data_key",
]
