import sys

from nbviz.dataset.cli import main

sys.exit(main())
