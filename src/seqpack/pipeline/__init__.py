"""Run configuration, pipeline assembly, the commit step and the ``seqpack`` command line."""
