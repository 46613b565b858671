"""The tools that show a finished dataset to a person; no Beam and no torch.

- :mod:`seqpack.tools.blocks`: ``seqpack inspect``, decoded blocks in the terminal.
- :mod:`seqpack.tools.audit`: ``seqpack audit``, every example checked for masking, BOS/EOS, position and truncation
  faults, counted by kind, a few of each decoded.
- :mod:`seqpack.tools.report`: ``seqpack report``, one self-contained HTML file with plots.
- :mod:`seqpack.tools.stats`: ``seqpack stats``, the statistics of every generation added up, or of one.
- :mod:`seqpack.tools.status`: ``seqpack status``, the generations, and the inputs not consumed yet or changed since.
"""
