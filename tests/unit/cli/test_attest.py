"""``enclaverec attest show|verify``: output, JSON shapes and every exit code."""

from __future__ import annotations

import json
import time

import pytest

from enclaverec.crypto.signing import generate_p256_key
from enclaverec.tee.measurement import measured_inputs
from enclaverec.tee.ratls import RATLSCert
from enclaverec.tee.simulated_backend import SimulatedBackend
from enclaverec.tee.simulation_pki import SimulationPKI

VECTORS_NOW = "1750809600"
SGX_MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
SGX_MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
ALLOW_SAMPLE = (
    "--allow-tcb-status",
    "ConfigurationAndSWHardeningNeeded",
    "--allow-advisory",
    "INTEL-SA-00289",
    "--allow-advisory",
    "INTEL-SA-00615",
)
NONCE = b"0123456789abcdef"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A simulation deployment made now, a quote file and an RA-TLS certificate file."""
    folder = tmp_path_factory.mktemp("attest")
    pki = SimulationPKI.create(folder / "deployment")
    mrenclave = measured_inputs("aggregator", b"rounds = 1\n").mrenclave()
    backend = SimulatedBackend(pki, mrenclave, isv_prod_id=1, isv_svn=2)
    quote = folder / "sim_quote"
    quote.write_bytes(backend.quote(bytes(range(64))))
    cert = folder / "ratls.pem"
    cert.write_bytes(RATLSCert.create(backend, generate_p256_key(), nonce=NONCE).pem)
    return {"pki": pki, "quote": quote, "cert": cert, "mrenclave": mrenclave.hex()}


def sgx_verify(run_cli, vectors, *extra):
    return run_cli(
        "attest",
        "verify",
        "--quote",
        vectors / "sgx_quote",
        "--collateral",
        vectors / "sgx_quote_collateral.json",
        "--at",
        VECTORS_NOW,
        *extra,
    )


# --- show -----------------------------------------------------------------------------------


def test_show_quote_in_words(run_cli, dcap_vectors):
    code, out, _ = run_cli("attest", "show", dcap_vectors / "sgx_quote")
    assert code == 0
    assert "UNVERIFIED" in out
    assert f"MRENCLAVE            {SGX_MRENCLAVE}" in out
    assert f"MRSIGNER             {SGX_MRSIGNER}" in out
    assert "ISVPRODID            0" in out
    assert "DEBUG                no" in out
    assert "CN=Intel SGX Root CA" in out


def test_show_quote_json(run_cli, dcap_vectors):
    code, out, _ = run_cli("attest", "show", dcap_vectors / "sgx_quote", "--json")
    assert code == 0
    document = json.loads(out)
    assert document["kind"] == "quote" and document["verified"] is False
    quote = document["quote"]
    assert quote["mrenclave"] == SGX_MRENCLAVE
    assert quote["report_data"] == (b"Hello, world!" + bytes(51)).hex()
    assert (quote["isv_prod_id"], quote["isv_svn"], quote["debug"]) == (0, 0, False)
    assert quote["claims_simulated"] is False


def test_show_tdx_quote(run_cli, dcap_vectors):
    code, out, _ = run_cli("attest", "show", dcap_vectors / "tdx_quote", "--json")
    assert code == 0
    quote = json.loads(out)["quote"]
    assert quote["tee"] == "TDX" and quote["version"] == 4
    assert quote["mr_td"].startswith("91eb2b44d141d4ec")
    assert len(quote["rtmr"]) == 4
    assert "mrenclave" not in quote
    code, out, _ = run_cli("attest", "show", dcap_vectors / "tdx_quote")
    assert "MRTD" in out and "RTMR0-3" in out


def test_show_certificate_in_words(run_cli, simulated):
    code, out, _ = run_cli("attest", "show", simulated["cert"])
    assert code == 0
    assert "RA-TLS certificate, UNVERIFIED" in out
    assert "claims to be SIMULATED" in out
    assert "OU=SIMULATED" in out
    assert simulated["mrenclave"] in out


def test_show_certificate_json(run_cli, simulated):
    code, out, _ = run_cli("attest", "show", simulated["cert"], "--json")
    assert code == 0
    document = json.loads(out)
    assert document["kind"] == "ratls-certificate"
    assert document["certificate"]["evidence"] == "tcg-dice"
    assert document["certificate"]["claims_match_key"] is True
    assert document["certificate"]["nonce"] == NONCE.hex()
    assert document["quote"]["mrenclave"] == simulated["mrenclave"]
    assert document["quote"]["claims_simulated"] is True


def test_show_malformed_file_exits_2(run_cli, tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x03\x00" + bytes(30))
    code, _, err = run_cli("attest", "show", bad)
    assert code == 2
    assert "too short" in err


def test_show_missing_file_exits_2(run_cli, tmp_path):
    code, _, err = run_cli("attest", "show", tmp_path / "absent")
    assert code == 2
    assert "not found" in err


# --- verify: the real vectors -----------------------------------------------------------------


def test_default_policy_refuses_sgx_sample_with_tcb_status(run_cli, dcap_vectors):
    code, out, _ = sgx_verify(run_cli, dcap_vectors, "--json")
    assert code == 3
    document = json.loads(out)
    assert document["accepted"] is False
    assert document["failed_check"] == "tcb_status"
    assert document["got"] == "ConfigurationAndSWHardeningNeeded"
    assert document["expected"] == ["UpToDate"]


def test_refusal_without_json_is_one_line_on_stderr(run_cli, dcap_vectors):
    code, out, err = sgx_verify(run_cli, dcap_vectors)
    assert code == 3
    assert out == ""
    assert "refused (tcb_status)" in err


def test_policy_allowing_status_and_advisories_accepts(run_cli, dcap_vectors):
    code, out, _ = sgx_verify(run_cli, dcap_vectors, *ALLOW_SAMPLE, "--json")
    assert code == 0
    document = json.loads(out)
    assert document["accepted"] is True
    assert document["mrenclave"] == SGX_MRENCLAVE
    assert document["mrsigner"] == SGX_MRSIGNER
    assert document["report_data"] == (b"Hello, world!" + bytes(51)).hex()
    assert (document["isv_prod_id"], document["isv_svn"]) == (0, 0)
    assert document["tcb_status"] == "ConfigurationAndSWHardeningNeeded"
    assert sorted(document["advisory_ids"]) == ["INTEL-SA-00289", "INTEL-SA-00615"]
    assert document["simulated"] is False
    assert document["identity_checked"] is False


def test_acceptance_in_words_says_identity_not_checked(run_cli, dcap_vectors):
    code, out, _ = sgx_verify(run_cli, dcap_vectors, *ALLOW_SAMPLE)
    assert code == 0
    assert out.startswith("ACCEPTED")
    assert "identity NOT CHECKED" in out


def test_matching_mrenclave_checks_identity(run_cli, dcap_vectors):
    code, out, _ = sgx_verify(run_cli, dcap_vectors, *ALLOW_SAMPLE, "--mrenclave", SGX_MRENCLAVE)
    assert code == 0
    assert "identity NOT CHECKED" not in out


def test_mrenclave_of_zeros_refuses_with_mrenclave(run_cli, dcap_vectors):
    code, out, _ = sgx_verify(run_cli, dcap_vectors, "--mrenclave", "0" * 64, "--json")
    assert code == 3
    document = json.loads(out)
    assert document["failed_check"] == "mrenclave"
    assert document["got"] == SGX_MRENCLAVE
    assert document["expected"] == ["0" * 64]


def test_policy_file_accepts(run_cli, dcap_vectors, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'tcb_statuses = ["ConfigurationAndSWHardeningNeeded"]\n'
        'allowed_advisories = ["INTEL-SA-00289", "INTEL-SA-00615"]\n'
        f'mrsigner = ["{SGX_MRSIGNER}"]\n'
        "max_collateral_age_days = 6\n"
    )
    code, out, _ = sgx_verify(run_cli, dcap_vectors, "--policy", policy, "--json")
    assert code == 0
    assert json.loads(out)["identity_checked"] is True


def test_flags_add_to_the_policy_file(run_cli, dcap_vectors, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('allowed_advisories = ["INTEL-SA-00289", "INTEL-SA-00615"]\n')
    code, _, _ = sgx_verify(
        run_cli,
        dcap_vectors,
        "--policy",
        policy,
        "--allow-tcb-status",
        "ConfigurationAndSWHardeningNeeded",
    )
    assert code == 0


def test_policy_file_with_unknown_key_exits_2(run_cli, dcap_vectors, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('mrenclaves = ["00"]\n')
    code, _, err = sgx_verify(run_cli, dcap_vectors, "--policy", policy)
    assert code == 2
    assert "unknown policy key" in err


def test_unknown_tcb_status_flag_exits_2(run_cli, dcap_vectors):
    code, _, err = sgx_verify(run_cli, dcap_vectors, "--allow-tcb-status", "Fine")
    assert code == 2
    assert "unknown TCB status" in err


def test_bad_mrenclave_flag_exits_2(run_cli, dcap_vectors):
    code, _, err = sgx_verify(run_cli, dcap_vectors, "--mrenclave", "abc")
    assert code == 2
    assert "64 hex digits" in err


def test_tampered_quote_refused_with_dcap(run_cli, dcap_vectors, tmp_path):
    tampered = bytearray((dcap_vectors / "sgx_quote").read_bytes())
    tampered[48 + 64] ^= 1
    path = tmp_path / "tampered"
    path.write_bytes(bytes(tampered))
    code, out, _ = run_cli(
        "attest",
        "verify",
        "--quote",
        path,
        "--collateral",
        dcap_vectors / "sgx_quote_collateral.json",
        "--at",
        VECTORS_NOW,
        *ALLOW_SAMPLE,
        "--json",
    )
    assert code == 3
    assert json.loads(out)["failed_check"] == "dcap"


def test_current_date_refused_for_expired_collateral(run_cli, dcap_vectors):
    code, out, _ = run_cli(
        "attest",
        "verify",
        "--quote",
        dcap_vectors / "sgx_quote",
        "--collateral",
        dcap_vectors / "sgx_quote_collateral.json",
        *ALLOW_SAMPLE,
        "--json",
    )
    assert code == 3
    assert json.loads(out)["failed_check"] == "collateral_validity"


def test_tdx_quote_verifies_up_to_date(run_cli, dcap_vectors):
    code, out, _ = run_cli(
        "attest",
        "verify",
        "--quote",
        dcap_vectors / "tdx_quote",
        "--collateral",
        dcap_vectors / "tdx_quote_collateral.json",
        "--at",
        VECTORS_NOW,
        "--json",
    )
    assert code == 0
    document = json.loads(out)
    assert document["tcb_status"] == "UpToDate"
    assert document["tee"] == "TDX"
    assert document["mrenclave"] is None
    assert document["mr_td"].startswith("91eb2b44")


def test_malformed_quote_exits_2(run_cli, dcap_vectors, tmp_path):
    path = tmp_path / "garbage"
    path.write_bytes(b"\x03\x00\x02\x00" + bytes(100))
    code, _, err = run_cli(
        "attest",
        "verify",
        "--quote",
        path,
        "--collateral",
        dcap_vectors / "sgx_quote_collateral.json",
    )
    assert code == 2
    assert "truncated" in err


def test_missing_evidence_flag_is_a_usage_error(run_cli, simulated):
    with pytest.raises(SystemExit) as excinfo:
        run_cli("attest", "verify", "--collateral", simulated["pki"].folder)
    assert excinfo.value.code == 2


def test_unreachable_pccs_exits_1(run_cli, simulated):
    code, _, err = run_cli(
        "attest", "verify", "--quote", simulated["quote"], "--pccs", "http://127.0.0.1:9"
    )
    assert code == 1
    assert "could not fetch collateral from PCCS http://127.0.0.1:9" in err


# --- verify: simulated evidence ---------------------------------------------------------------


def test_allow_simulated_without_root_exits_2(run_cli, simulated):
    code, _, err = run_cli(
        "attest",
        "verify",
        "--quote",
        simulated["quote"],
        "--collateral",
        simulated["pki"].folder,
        "--allow-simulated",
    )
    assert code == 2
    assert "--allow-simulated needs --simulation-root" in err


def test_simulated_quote_refused_without_allow_simulated(run_cli, simulated):
    code, out, _ = run_cli(
        "attest",
        "verify",
        "--quote",
        simulated["quote"],
        "--collateral",
        simulated["pki"].folder,
        "--simulation-root",
        simulated["pki"].folder,
        "--json",
    )
    assert code == 3
    assert json.loads(out)["failed_check"] == "simulated"


def test_simulated_quote_refused_under_intels_root_only(run_cli, simulated):
    code, out, _ = run_cli(
        "attest",
        "verify",
        "--quote",
        simulated["quote"],
        "--collateral",
        simulated["pki"].folder / "collateral.json",
        "--json",
    )
    assert code == 3
    assert json.loads(out)["failed_check"] == "dcap"


def test_simulated_quote_accepted_with_its_root(run_cli, simulated):
    code, out, _ = run_cli(
        "attest",
        "verify",
        "--quote",
        simulated["quote"],
        "--collateral",
        simulated["pki"].folder,
        "--simulation-root",
        simulated["pki"].folder / "root_ca.pem",
        "--allow-simulated",
        "--mrenclave",
        simulated["mrenclave"],
        "--json",
    )
    assert code == 0
    document = json.loads(out)
    assert document["simulated"] is True
    assert document["mrenclave"] == simulated["mrenclave"]
    assert (document["isv_prod_id"], document["isv_svn"]) == (1, 2)
    assert document["report_data"] == bytes(range(64)).hex()
    assert "UNSAFE: SIMULATED" in document["policy"]


def test_simulated_certificate_with_nonce(run_cli, simulated):
    base = (
        "attest",
        "verify",
        "--cert",
        simulated["cert"],
        "--collateral",
        simulated["pki"].folder,
        "--simulation-root",
        simulated["pki"].folder,
        "--allow-simulated",
    )
    code, out, _ = run_cli(*base, "--nonce", NONCE.hex())
    assert code == 0
    assert out.startswith("ACCEPTED - SIMULATED evidence")
    code, out, _ = run_cli(*base, "--nonce", "00", "--json")
    assert code == 3
    document = json.loads(out)
    assert document == {
        "accepted": False,
        "failed_check": "nonce",
        "got": NONCE.hex(),
        "expected": "00",
        "message": document["message"],
        "error": "verification",
        "exit_code": 3,
    }


def test_expired_certificate_exits_3(run_cli, simulated):
    code, out, _ = run_cli(
        "attest",
        "verify",
        "--cert",
        simulated["cert"],
        "--collateral",
        simulated["pki"].folder,
        "--simulation-root",
        simulated["pki"].folder,
        "--allow-simulated",
        "--at",
        str(int(time.time()) + 2 * 3600),
        "--json",
    )
    assert code == 3
    assert json.loads(out)["failed_check"] == "certificate"


def test_nonce_with_a_raw_quote_is_a_usage_error(run_cli, simulated):
    code, _, err = run_cli(
        "attest",
        "verify",
        "--quote",
        simulated["quote"],
        "--collateral",
        simulated["pki"].folder,
        "--nonce",
        "00",
    )
    assert code == 2
    assert "--nonce applies to --cert only" in err
