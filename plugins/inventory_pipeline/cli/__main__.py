"""`python -m inventory_pipeline.cli`: the `inventory-pipeline` command."""

import sys

from inventory_pipeline.cli import main

sys.exit(main())
