import sys

from asdx.cli import main

sys.exit(main())
