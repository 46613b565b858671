"""``python -m seqpack.cli``: the ``seqpack`` command."""

from seqpack.cli.main import console_main

console_main()
