"""What the command-line tools share (``common``), and the commands redrive, retention, dashboards."""
