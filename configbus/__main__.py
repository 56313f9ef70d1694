import sys

from configbus.cli import main

sys.exit(main())
