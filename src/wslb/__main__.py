import sys

from wslb.cli import main

sys.exit(main())
