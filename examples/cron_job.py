"""A cron job that never piles up: a run that finds the last one still going exits.

Schedule it with the crontab line in ``examples/cron/crontab``. When a run
takes longer than the interval, the next one prints one line naming the
running copy (its pid, start time and command) to stderr and exits with
status 1, which cron mails or logs; nothing waits and nothing is killed. A
copy started by hand from your shell is refused the same way, because cron
and your shell use the same lock directory.
"""

from __future__ import annotations

import logging

from singleton_proc import single_instance

log = logging.getLogger("nightly-report")


# The name is given, not derived: two different cron_job.py in two folders
# would otherwise share the name "cron_job" and exclude each other.
@single_instance("nightly-report", on_conflict="exit")
def main() -> None:
    """The job itself; here, a report over a few numbers."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    total = sum(n * n for n in range(1_000))
    log.info("report written: the sum of squares below 1000 is %d", total)


if __name__ == "__main__":
    main()
