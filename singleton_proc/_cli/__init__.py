"""The command line: ``singleton-proc run``, ``status`` and ``stop``."""
