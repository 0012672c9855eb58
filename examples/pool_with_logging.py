"""A worker pool whose log records and progress bar show in the parent.

``run_in_pool`` forwards every record the workers log to the parent's
handlers (``%(process)d`` is the worker's pid), so one
``logging.basicConfig`` in the parent configures them all;
``progress=True`` draws a tqdm bar on stderr (the ``progress`` extra:
``pip install -e ".[progress]"`` in a clone; without tqdm,
``progress=True`` raises ``ImportError`` naming it). A task that raises is
re-raised here with the worker's traceback; ``return_exceptions=True``
collects it instead, as here.
"""

from __future__ import annotations

import logging
import zlib

from singleton_proc import run_in_pool

log = logging.getLogger("checksums")


def checksum(size: int) -> int:
    """A CRC of ``size`` bytes; sizes that are not positive are an error."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    value = zlib.crc32(bytes(range(256)) * (size // 256 + 1))
    log.info("%d bytes -> %08x", size, value)
    return value


def main() -> None:
    """Checksum ten sizes (one of them bad) in two workers."""
    logging.basicConfig(level=logging.INFO, format="%(process)d %(name)s: %(message)s")
    sizes = [1_000 * n for n in range(1, 10)] + [0]
    results = run_in_pool(checksum, sizes, n=2, return_exceptions=True, progress=True)
    pairs = zip(sizes, results, strict=True)
    failed = [(size, r) for size, r in pairs if isinstance(r, Exception)]
    log.info("%d checksums, %d failed: %s", len(results), len(failed), failed)


if __name__ == "__main__":
    main()
