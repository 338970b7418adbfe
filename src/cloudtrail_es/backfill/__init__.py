"""The backfill command: which files (``selection``), the run (``run``), the command line (``cli``)."""
