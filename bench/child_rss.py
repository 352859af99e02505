"""Run the CLI in a child process and read back that child's own peak RSS.

VmHWM, not ``ru_maxrss``: Linux carries a forked child's pre-exec peak (the parent's resident
memory at fork, up to several GB in a bench that holds a model) into ``ru_maxrss``, while VmHWM
belongs to the image the child executes.
"""

from __future__ import annotations

import sys
from pathlib import Path

_RUNNER = """\
import resource, runpy, sys
rss_file = {rss_file!r}
sys.argv = ['panacea-patch', *sys.argv[1:]]
try:
    runpy.run_module('panacea_patch.cli', run_name='__main__')
finally:
    try:
        kb = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])
    except (OSError, IndexError, ValueError):
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch = sys.modules.get('torch')
    threads = torch.get_num_threads() if torch is not None else 0
    open(rss_file, 'w').write(f'{{kb}} {{threads}}')
"""


def cli_command(args: list[str], rss_file: Path) -> list[str]:
    """``python -c RUNNER ARGS``: ``panacea-patch ARGS`` that writes its peak RSS (KiB)."""
    return [sys.executable, "-c", _RUNNER.format(rss_file=str(rss_file)), *args]


def read_peak_bytes(rss_file: Path) -> int:
    """The child's peak RSS in bytes; the file is removed."""
    return read_peak_and_threads(rss_file)[0]


def read_peak_and_threads(rss_file: Path) -> tuple[int, int]:
    """The child's peak RSS in bytes and its torch threads (0: torch never loaded); removed."""
    kb, threads = (int(x) for x in rss_file.read_text().split())
    rss_file.unlink()
    return kb * 1024, threads
