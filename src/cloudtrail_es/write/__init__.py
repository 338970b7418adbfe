"""Writing: the cluster edge, engines, indexes, ``_bulk``, the write pipeline, dead letters, the processor.

``pipeline`` is one batch's path (events -> documents -> chunks -> outcomes); ``processor`` wires it
to a source, index creation and dead letters, one file at a time.
"""
