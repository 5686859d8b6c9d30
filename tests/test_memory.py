"""The export jobs' memory policy: freed large blocks are reused instead of being faulted in again."""

import platform
import subprocess
import sys

import pytest

from mobileseg.memory import retain_freed_memory

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="a glibc malloc policy"
)

# Allocate, fill and free a 96 MB array five times; print the minor page faults this took.
CHURN = """
import resource, sys
import numpy as np
from mobileseg.memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
np.ones(1).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    block = np.empty(12 * 2**20)
    block.fill(1.0)
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def test_freed_blocks_are_reused_not_faulted_in_again():
    # glibc unmaps each freed block, so every pass faults it in anew; the retained heap faults it once.
    # (How many faults a pass costs depends on the page size: numpy asks for huge pages.)
    default, retained = _faults("default"), _faults("retain")
    assert retained > 0
    assert default > 3 * retained
    assert retain_freed_memory()
