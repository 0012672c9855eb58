"""A chat bot that a redeploy replaces: the new copy stops the old one first.

Start it again (a deploy, or by hand after editing the code) and the new copy
proves that the running one is really this bot (pid, start time, command
line, user), sends it SIGTERM, SIGKILL after ``grace`` seconds if it does not
leave, and takes over. The old copy leaves cleanly: SIGTERM raises
``SystemExit(143)`` in it, so its ``finally`` block says goodbye, and the
new copy starts only once it has gone. A process that merely reused the old
pid is never touched.

Here the bot "polls for messages" once a second until it is stopped.
"""

from __future__ import annotations

import os
import threading

from singleton_proc import SingleInstance

stopped = threading.Event()  # never set: the bot runs until a signal stops it


def poll_messages() -> None:
    """Stand-in for the chat service's long poll."""
    stopped.wait(1.0)


def main() -> None:
    """Take over from the running copy, then serve until stopped."""
    with SingleInstance("chat-bot", on_conflict="replace", grace=5):
        try:  # from the first line on: a SIGTERM may come right after it
            print(f"bot {os.getpid()}: serving", flush=True)
            while True:
                poll_messages()
        finally:
            print(f"bot {os.getpid()}: stopping cleanly", flush=True)


if __name__ == "__main__":
    main()
