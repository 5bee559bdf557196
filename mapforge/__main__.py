import sys

from mapforge.cli import main

sys.exit(main())
