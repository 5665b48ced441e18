"""The server's sealed keys and its RA-TLS certificate: made in the enclave role, kept only
sealed, a fresh certificate and quote at every start, renewed before expiry."""

from __future__ import annotations

import datetime as dt
import stat

import pytest
from channel_helpers import AGGREGATOR_MRENCLAVE, FakeClock, verification
from cryptography import x509

from enclaverec.crypto import certs
from enclaverec.crypto.keys import fingerprint
from enclaverec.errors import ConfigError, IntegrityError, UsageError
from enclaverec.tee.ratls import extract_evidence
from enclaverec.transport.server import (
    AttestedServer,
    ListenConfig,
    ServerIdentity,
    ServerIdentityConfig,
)


def test_a_restart_keeps_the_sealed_keys_and_makes_a_new_certificate_and_quote(
    tmp_path, aggregator_backend, live_pki
):
    config = ServerIdentityConfig(tmp_path / "state")
    first = ServerIdentity(aggregator_backend, config)
    second = ServerIdentity(aggregator_backend, config)
    first_cert, second_cert = first.certificate.certificate, second.certificate.certificate
    assert certs.spki_der(first_cert) == certs.spki_der(second_cert)  # same TLS key
    assert fingerprint(first.ca_key.public_key()) == fingerprint(second.ca_key.public_key())
    assert first.certificate.der != second.certificate.der
    assert extract_evidence(first_cert).quote != extract_evidence(second_cert).quote
    # Both verify under the client's policy.
    trusting = verification(live_pki, AGGREGATOR_MRENCLAVE)
    for cert in (first_cert, second_cert):
        assert trusting.verify_certificate(cert).identity.mr_enclave == AGGREGATOR_MRENCLAVE


def test_the_state_directory_holds_only_sealed_keys(tmp_path, aggregator_backend):
    identity = ServerIdentity(aggregator_backend, ServerIdentityConfig(tmp_path / "state"))
    files = sorted(path.name for path in (tmp_path / "state").iterdir())
    assert files == ["ca.sealed", "tls.sealed"]
    secrets = [
        identity.certificate.private_key.private_numbers().private_value,
        identity.ca_key.private_numbers().private_value,
    ]
    for name in files:
        path = tmp_path / "state" / name
        data = path.read_bytes()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert data.startswith(b"ERSEALED")
        assert b"PRIVATE KEY" not in data
        for secret in secrets:
            raw = secret.to_bytes(32, "big")
            assert raw not in data
            assert raw.hex().encode() not in data


def test_another_enclave_build_cannot_unseal_the_keys(tmp_path, aggregator_backend, rogue_backend):
    config = ServerIdentityConfig(tmp_path / "state")
    ServerIdentity(aggregator_backend, config)
    with pytest.raises(IntegrityError, match="another enclave build"):
        ServerIdentity(rogue_backend, config)


def test_a_modified_sealed_key_is_refused(tmp_path, aggregator_backend):
    config = ServerIdentityConfig(tmp_path / "state")
    ServerIdentity(aggregator_backend, config)
    path = tmp_path / "state" / "tls.sealed"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        ServerIdentity(aggregator_backend, config)


def test_renews_when_due_and_accepts_statements_for_both_certificates(tmp_path, aggregator_backend):
    clock = FakeClock()
    identity = ServerIdentity(
        aggregator_backend, ServerIdentityConfig(tmp_path / "state"), clock=clock
    )
    first = identity.certificate_sha256
    assert identity.renew_if_due() is False
    clock.offset = dt.timedelta(minutes=50)  # 10 minutes left, renew_before is 15
    assert identity.renew_if_due() is True
    second = identity.certificate_sha256
    assert second != first
    assert identity.accepted_certificate_digests() == {first, second}
    clock.offset = dt.timedelta(minutes=70)  # the first has expired
    assert identity.accepted_certificate_digests() == {second}


def test_the_certificate_is_short_lived_and_names_its_key(tmp_path, aggregator_backend):
    identity = ServerIdentity(aggregator_backend, ServerIdentityConfig(tmp_path / "state"))
    cert = identity.certificate.certificate
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= dt.timedelta(hours=1, minutes=5)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["RATLS"]
    assert "SIMULATED" in cert.subject.rfc4514_string()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"certificate_lifetime": dt.timedelta(0)},
        {"renew_before": dt.timedelta(hours=2)},
        {"renew_before": -dt.timedelta(seconds=1)},
    ],
)
def test_bad_identity_configuration_is_refused(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        ServerIdentityConfig(tmp_path, **kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"application_port": 70000}, {"enrollment_port": -1}, {"max_workers": 0}]
)
def test_bad_listen_configuration_is_refused(kwargs):
    with pytest.raises(ConfigError):
        ListenConfig(**kwargs)


def test_requiring_evidence_needs_a_verifier_for_it(tmp_path, aggregator_backend, both_required):
    identity = ServerIdentity(aggregator_backend, ServerIdentityConfig(tmp_path / "state"))
    with pytest.raises(ConfigError, match="no verifier"):
        AttestedServer.create(identity, both_required, ListenConfig(), evidence_verification=None)


def test_endpoints_before_start_is_a_usage_error(
    tmp_path, aggregator_backend, both_required, live_pki
):
    identity = ServerIdentity(aggregator_backend, ServerIdentityConfig(tmp_path / "state"))
    server = AttestedServer.create(
        identity,
        both_required,
        ListenConfig(),
        evidence_verification=verification(live_pki, AGGREGATOR_MRENCLAVE),
    )
    with pytest.raises(UsageError):
        server.endpoints  # noqa: B018
