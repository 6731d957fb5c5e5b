"""The ``clusterrpc`` command-line tool (entry point: :func:`clusterrpc.cli.main.main`)."""
