import sys

from clusterrpc.cli.main import main

sys.exit(main())
