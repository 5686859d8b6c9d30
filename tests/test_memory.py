"""The export jobs' memory policy: freed large blocks are reused instead of being faulted in again."""

import platform
import subprocess
import sys

import pytest

from mobileseg.memory import retain_freed_memory

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="a glibc malloc policy"
)

# Allocate (glibc malloc, so no huge-page advice), fill and free a 96 MB block five times; print the
# minor page faults this took.
CHURN = """
import ctypes, ctypes.util, resource, sys
from mobileseg.memory import retain_freed_memory
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "retain":
    assert retain_freed_memory()
size = 96 * 2**20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def test_freed_blocks_are_reused_not_faulted_in_again():
    pages = 96 * 2**20 // 4096
    default, retained = _faults("default"), _faults("retain")
    assert default > 4 * pages  # glibc unmaps each freed block: every pass faults it in anew
    assert retained < 2 * pages  # the heap keeps it: only the first pass faults
    assert retain_freed_memory()
