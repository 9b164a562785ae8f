"""Performance harness for clipspace (not part of CI): `python -m benchmarks --help`, or `make bench`."""
