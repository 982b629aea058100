"""`python -m mgpu_lab ...`: the command line (mgpu_lab/tools/cli.py); `doctor` first, as it must run without torch."""

import sys

if sys.argv[1:2] == ["doctor"]:  # before the CLI's imports, which need torch
    from .tools import doctor

    sys.exit(doctor.main(sys.argv[2:]))

from .tools.cli import main

sys.exit(main())
