"""The reading budget (monai_patcher/data/readers/budget.py): a declared decoded size over it is a DataError naming
the file; the default follows the memory available and an address-space limit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from monai_patcher.data import DataError
from monai_patcher.data.readers.budget import check_decoded_size, default_max_bytes


def test_memory_budget_default_follows_available_memory_and_the_address_space_limit():
    assert 0 < default_max_bytes() < 1 << 50
    check_decoded_size("x", 10, "it", max_bytes=10)
    with pytest.raises(DataError, match="x: it declares 11 bytes of decoded data, more than the reading budget of 10 bytes"):
        check_decoded_size("x", 11, "it", max_bytes=10)
    # under RLIMIT_AS (a scheduler's cap) the budget is a quarter of what the cap leaves, not of the machine's memory
    code = (
        "import resource\n"
        "from monai_patcher.data.readers.budget import _address_space_left, default_max_bytes\n"
        "vm = int([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmSize:')][0]) * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + (400 << 20), resource.RLIM_INFINITY))\n"
        "print(default_max_bytes())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert out.returncode == 0, out.stderr
    assert 50 << 20 < int(out.stdout) <= 100 << 20, out.stdout
