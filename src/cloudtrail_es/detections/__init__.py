"""Sigma detections: rules -> queries (``sigma``, build time: needs pySigma) and the detector (``detect``)."""
