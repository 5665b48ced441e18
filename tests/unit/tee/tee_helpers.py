"""Constants and helpers shared by the TEE tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import datetime as dt

SIM_CREATED = 1735689600
"""2025-01-01T00:00:00Z: every simulation deployment of these tests is made then."""
SIM_NOW = SIM_CREATED + 3600
"""Verification time of simulated evidence: one hour after the deployment was made."""
VECTORS_NOW = 1750809600
"""2025-06-25T00:00:00Z: the time at which the real vectors verify (vectors README)."""

MRENCLAVE = bytes.fromhex("5a" * 32)
ISV_PROD_ID = 7
ISV_SVN = 3

SGX_STATUS = "ConfigurationAndSWHardeningNeeded"
SGX_ADVISORIES = ("INTEL-SA-00289", "INTEL-SA-00615")
SGX_MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
SGX_MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
TDX_MRTD = (
    "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407"
    "de03ae6dc5f87f27428b2538873118b7"
)
TDX_REPORT_DATA_32 = "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9"


def utc(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
