import sys

from geocore.cli.main import main

sys.exit(main())
