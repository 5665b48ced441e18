"""One contract suite for both evidence backends: simulated, and Gramine against the
SIMULATED /dev/attestation folder (so the Gramine backend's whole path runs without SGX)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tee_helpers import ISV_PROD_ID, ISV_SVN, MRENCLAVE, SIM_NOW

from enclaverec.errors import TEEError, UsageError
from enclaverec.tee.backend import EvidenceBackend, open_backend
from enclaverec.tee.gramine import GramineBackend
from enclaverec.tee.measurement import measured_inputs
from enclaverec.tee.simulated_backend import SimulatedBackend
from enclaverec.tools.fake_device import SimulatedAttestationDevice


@pytest.fixture(scope="module")
def fake_device(sim_backend, tmp_path_factory):
    with SimulatedAttestationDevice(
        tmp_path_factory.mktemp("dev") / "attestation", sim_backend
    ) as device:
        yield device


@pytest.fixture(params=["simulated", "gramine"])
def backend(request, sim_backend, fake_device) -> EvidenceBackend:
    if request.param == "simulated":
        return sim_backend
    return GramineBackend(fake_device.folder)


def test_quote_carries_the_report_data_and_verifies(
    backend, sim_verifier, sim_collateral, sim_spec
):
    for report_data in (bytes(64), bytes(range(64)), b"\xff" * 64):
        verified = sim_verifier.verify(
            backend.quote(report_data), sim_collateral, sim_spec.build(), now=SIM_NOW
        )
        assert verified.report_data == report_data
        assert verified.mr_enclave == backend.measurement()
        assert (verified.isv_prod_id, verified.isv_svn) == (ISV_PROD_ID, ISV_SVN)


def test_measurement_is_the_mrenclave(backend):
    assert backend.measurement() == MRENCLAVE


@pytest.mark.parametrize("report_data", [b"", bytes(63), bytes(65), "x" * 64])
def test_report_data_must_be_64_bytes(backend, report_data):
    with pytest.raises(UsageError, match="64 bytes"):
        backend.quote(report_data)


def test_sealing_key_is_32_bytes_and_stable(backend):
    key = backend.sealing_key("checkpoints")
    assert len(key) == 32
    assert backend.sealing_key("checkpoints") == key


def test_sealing_keys_are_separated_by_label(backend):
    assert backend.sealing_key("checkpoints") != backend.sealing_key("keys")


def test_sealing_key_label_must_be_printable(backend):
    with pytest.raises(UsageError):
        backend.sealing_key("")
    with pytest.raises(UsageError):
        backend.sealing_key("a\nb")


# --- backend-specific ---------------------------------------------------------------------


def test_simulated_sealing_key_depends_on_the_measurement(sim_pki, sim_backend):
    other = SimulatedBackend(sim_pki, b"\x01" * 32)
    assert other.sealing_key("checkpoints") != sim_backend.sealing_key("checkpoints")


def test_simulated_sealing_key_survives_a_restart(sim_pki, sim_backend):
    again = SimulatedBackend(sim_pki, MRENCLAVE)
    assert again.sealing_key("checkpoints") == sim_backend.sealing_key("checkpoints")


def test_simulated_sealing_key_depends_on_the_deployment(fresh_pki, sim_backend):
    other = SimulatedBackend(fresh_pki, MRENCLAVE)
    assert other.sealing_key("checkpoints") != sim_backend.sealing_key("checkpoints")


def test_gramine_sealing_key_survives_a_restart(fake_device):
    assert GramineBackend(fake_device.folder).sealing_key("x") == GramineBackend(
        fake_device.folder
    ).sealing_key("x")


def test_gramine_backend_outside_gramine_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not inside Gramine"):
        GramineBackend(tmp_path)


def test_gramine_backend_needs_dcap_attestation(tmp_path):
    (tmp_path / "attestation_type").write_text("none")
    with pytest.raises(UsageError, match="needs 'dcap'"):
        GramineBackend(tmp_path)


def test_gramine_backend_reports_a_broken_device(tmp_path):
    (tmp_path / "attestation_type").write_text("dcap")
    backend = GramineBackend(tmp_path)
    with pytest.raises(TEEError, match="could not produce a quote"):
        backend.quote(bytes(64))
    with pytest.raises(TEEError, match="sealing key"):
        backend.sealing_key("x")


def test_open_backend_simulated(sim_pki, sim_verifier, sim_collateral, sim_spec):
    inputs = measured_inputs("aggregator", b"rounds = 1\n")
    backend = open_backend("simulated", simulation_folder=sim_pki.folder, measured_inputs=inputs)
    assert backend.simulated and backend.name == "simulated"
    verified = sim_verifier.verify(
        backend.quote(bytes(64)), sim_collateral, sim_spec.build(), now=SIM_NOW
    )
    assert verified.mr_enclave == inputs.mrenclave()


def test_open_backend_gramine(fake_device):
    backend = open_backend("gramine", attestation_dir=fake_device.folder)
    assert not backend.simulated and backend.name == "gramine"
    assert backend.measurement() == MRENCLAVE


def test_open_backend_simulated_needs_its_inputs(sim_pki):
    with pytest.raises(UsageError, match="measured inputs"):
        open_backend("simulated", simulation_folder=sim_pki.folder)


def test_open_backend_unknown_kind():
    with pytest.raises(UsageError, match="unknown TEE backend"):
        open_backend("sev")  # type: ignore[arg-type]


@pytest.mark.sgx_hw
def test_real_gramine_quote_parses_as_sgx():
    from enclaverec.tee.quote import parse_unverified_quote

    backend = GramineBackend(Path("/dev/attestation"))
    quote = parse_unverified_quote(backend.quote(bytes(range(64))))
    assert quote.report_data == bytes(range(64))
    assert quote.sgx.mr_enclave == backend.measurement()
    assert len(backend.sealing_key("sgx_hw test")) == 32
