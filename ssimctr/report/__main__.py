"""`python -m ssimctr.report` is the `ssimctr-report` command."""

import sys

from ssimctr.report.cli import main

sys.exit(main())
