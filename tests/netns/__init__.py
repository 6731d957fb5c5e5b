"""The multi-host test lab (network namespaces, a bridge, real node processes): see lab.py."""
