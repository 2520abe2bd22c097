"""`python -m robench.cli`: the `robench` command."""
import sys

from robench.cli import main

sys.exit(main())
