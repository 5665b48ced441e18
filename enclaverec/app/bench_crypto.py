"""The crypto benchmark: throughput of AES-256-GCM, sealing and encrypted data files
(``enclaverec bench crypto`` is its command line).

Figures are GB/s (10**9 bytes per second) of plaintext, single-threaded: "wall" divides by
elapsed time, "per core" by the thread's CPU time (user + system), which stays meaningful
when other processes share the machine. The data file figures run on a generated
Criteo-shaped file in a temporary folder: "memory to memory" is the format's own cost;
"file to file" adds reading (warm page cache: the file was just written), writing and the
fsync that makes the output durable, so it depends on the disk.
"""

from __future__ import annotations

import io
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from enclaverec.errors import StorageError

if TYPE_CHECKING:
    from enclaverec.crypto.aead import Buffer

_MESSAGE = 1 << 20
_SEALED_BLOB = 16 << 20
MAX_SIZE_MB = 16384


@dataclass(frozen=True)
class Measurement:
    name: str
    bytes: int
    wall_seconds: float
    cpu_seconds: float

    @property
    def gb_per_second(self) -> float:
        return self.bytes / self.wall_seconds / 1e9 if self.wall_seconds > 0 else 0.0

    @property
    def gb_per_second_per_core(self) -> float:
        return self.bytes / self.cpu_seconds / 1e9 if self.cpu_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "gb_per_second": round(self.gb_per_second, 3),
            "gb_per_second_per_core": round(self.gb_per_second_per_core, 3),
        }


def _measure(name: str, size: int, work: Callable[[], object]) -> Measurement:
    wall, cpu = time.perf_counter(), time.thread_time()
    work()
    return Measurement(name, size, time.perf_counter() - wall, time.thread_time() - cpu)


def _criteo_block(size: int) -> bytes:
    """About ``size`` bytes of Criteo-shaped lines (content does not change AES speed;
    line lengths matter for the chunking, so they vary like real lines)."""
    import numpy as np

    rng = np.random.default_rng(0)
    lines = []
    total = 0
    while total < size:
        ints = [str(v) if v >= 0 else "" for v in rng.integers(-20, 3000, 13)]
        cats = [f"{v:08x}" if v % 7 else "" for v in rng.integers(0, 2**32, 26)]
        line = "\t".join([str(rng.integers(0, 2)), *ints, *cats]) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def _write_criteo_file(path: Path, size: int) -> int:
    block = _criteo_block(min(size, 4 << 20))
    written = 0
    with path.open("wb") as handle:
        while written < size:
            part = block[: size - written] if size - written < len(block) else block
            if len(part) < len(block):
                part = part[: part.rfind(b"\n") + 1] or part
            handle.write(part)
            written += len(part)
            if len(part) < len(block):
                break
    return written


class _Discard(io.RawIOBase):
    """A sink that keeps nothing: measures the format without the file system."""

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:  # type: ignore[override]
        return len(memoryview(data))


def run_benchmarks(size_mb: int, workdir: Path) -> list[Measurement]:
    """Every measurement, in order; files go to ``workdir`` (removed by the caller)."""
    from enclaverec.crypto import keys
    from enclaverec.crypto.aead import AES256GCM, random_key, random_nonce
    from enclaverec.data import encrypted
    from enclaverec.tee import sealing

    size = size_mb << 20
    results: list[Measurement] = []

    # 1. The raw primitive on 1 MiB messages (the data file's default chunk size).
    repeats = max(1, size // _MESSAGE)
    cipher = AES256GCM(random_key())
    message = os.urandom(_MESSAGE)
    nonce = random_nonce()
    sealed_message = cipher.encrypt(nonce, message, b"")

    def raw_encrypt() -> None:
        for _ in range(repeats):
            cipher.encrypt(nonce, message, b"")

    def raw_decrypt() -> None:
        for _ in range(repeats):
            cipher.decrypt(nonce, sealed_message, b"")

    results.append(_measure("aes-256-gcm encrypt", repeats * _MESSAGE, raw_encrypt))
    results.append(_measure("aes-256-gcm decrypt", repeats * _MESSAGE, raw_decrypt))

    # 2. Sealing (HKDF, header, AES-GCM) of checkpoint-sized blobs.
    blob_size = min(size, _SEALED_BLOB)
    blob_repeats = max(1, size // blob_size)
    sealing_key = random_key()
    blob_plaintext = os.urandom(blob_size)
    blob = sealing.seal(sealing_key, "bench", blob_plaintext)

    def seal() -> None:
        for _ in range(blob_repeats):
            sealing.seal(sealing_key, "bench", blob_plaintext)

    def unseal() -> None:
        for _ in range(blob_repeats):
            sealing.unseal(sealing_key, "bench", blob)

    results.append(_measure("seal (16 MiB blobs)", blob_repeats * blob_size, seal))
    results.append(_measure("unseal (16 MiB blobs)", blob_repeats * blob_size, unseal))

    # 3. The encrypted data file format: memory to memory (the format's own cost: line
    # cutting, counting, AES-GCM), then file to file (adds the file system and fsync).
    source = workdir / "bench.txt"
    plain_size = _write_criteo_file(source, size)
    text = source.read_bytes()
    dataset = encrypted.DataSetKey.generate(keys.generate_private_key().public_key(), "bench")
    results.append(
        _measure(
            "data file encrypt, memory to memory",
            plain_size,
            lambda: encrypted.encrypt_stream(
                io.BytesIO(text), _Discard(), dataset, file_name="bench.txt"
            ),
        )
    )
    target = workdir / "bench.txt.enc"
    results.append(
        _measure(
            "data file encrypt, file to file",
            plain_size,
            lambda: encrypted.encrypt_file(source, target, dataset),
        )
    )

    def verify() -> None:
        with encrypted.EncryptedDataReader(target, dataset.data_key) as reader:
            reader.verify_all()

    results.append(_measure("data file decrypt, file to memory", plain_size, verify))
    decrypted = workdir / "bench.out"
    results.append(
        _measure(
            "data file decrypt, file to file",
            plain_size,
            lambda: encrypted.decrypt_to_file(target, dataset.data_key, decrypted),
        )
    )
    if decrypted.stat().st_size != plain_size:
        raise StorageError("benchmark round trip changed the file size")
    return results


def environment() -> dict[str, object]:
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "cryptography": cryptography.__version__,
        "openssl": backend.openssl_version_text(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
