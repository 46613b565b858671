"""The ``seqpack`` command: ``run``, ``demo``, ``verify``, ``inspect`` and ``report`` (``main.py``), the flags of
``run`` (``flags.py``) and its job files (``jobfile.py``), and the Flex Template's entry point (``flex.py``)."""

from seqpack.cli.main import EXIT_FAILED, EXIT_USAGE, console_main, main

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "console_main", "main"]
