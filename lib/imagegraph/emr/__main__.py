"""`python -m imagegraph.emr`: see `imagegraph.emr.command`."""
import sys

from imagegraph.emr.command import main

sys.exit(main())
