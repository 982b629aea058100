"""`python -m mgpu_lab ...`: the command line (mgpu_lab/tools/cli.py); `doctor` first, as it must run without torch."""

import sys

try:  # Ctrl-C while torch and the rest are imported (seconds): one line and 130, as at any later moment
    if sys.argv[1:2] == ["doctor"]:  # before the CLI's imports, which need torch
        from .tools import doctor

        sys.exit(doctor.main(sys.argv[2:]))

    from .tools.cli import main
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
