"""Where an attested server listens: host, application port, enrollment port; gRPC targets."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from enclaverec.errors import UsageError


def grpc_target(host: str, port: int) -> str:
    """``host:port`` as gRPC and sockets want it (IPv6 literals in brackets)."""
    if not 0 < port < 65536:
        raise UsageError(f"a port is 1 to 65535, got {port}")
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names the loopback interface (``localhost`` or a loopback address).

    Other names are not resolved: a name whose resolution an attacker may influence is not
    proof of loopback.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServerEndpoints:
    """The ports of one attested server, as its clients need them.

    ``enrollment_port`` serves the enrollment RPCs with server authentication only;
    ``application_port`` serves the application services and requires a client certificate
    issued by the server's attested CA. The plaintext baseline has no enrollment port.
    """

    host: str
    application_port: int
    enrollment_port: int | None

    def __post_init__(self) -> None:
        grpc_target(self.host, self.application_port)
        if self.enrollment_port is not None:
            grpc_target(self.host, self.enrollment_port)

    @property
    def application_target(self) -> str:
        return grpc_target(self.host, self.application_port)

    @property
    def enrollment_target(self) -> str:
        if self.enrollment_port is None:
            raise UsageError("this server has no enrollment port (plaintext baseline)")
        return grpc_target(self.host, self.enrollment_port)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free right now on ``host`` (the OS picks them; a race with another process
    binding the same port in between is possible but harmless: the role then fails to
    start with a clear error)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
