"""The Dataflow Flex Template launcher runs this file (FLEX_TEMPLATE_PYTHON_PY_FILE) with the template's
parameters as flags; ``seqpack.cli.flex`` turns them into a ``seqpack run`` command line.

It sits outside the package on purpose: run as a script, a file's directory goes first on ``sys.path``, and
``src/seqpack/pipeline/`` holds modules (``config``, ``build``, ``run``) that would shadow other packages.
"""

import sys

from seqpack.cli.flex import main

if __name__ == "__main__":
    sys.exit(main())
