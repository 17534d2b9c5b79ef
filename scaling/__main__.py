"""python -m trainscale.scaling: the trainscale command."""
import sys

from trainscale.scaling.cli.main import main

sys.exit(main())
