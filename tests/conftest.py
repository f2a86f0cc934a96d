"""Session fixtures shared by every suite: the lab's PLC directory and reference PDS."""

from __future__ import annotations

import pytest

from tests import lab


@pytest.fixture(scope="session")
def lab_plc_url() -> str:
    return lab.ensure_lab()[0]


@pytest.fixture(scope="session")
def ref_pds_url() -> str:
    return lab.ref_pds_url()
