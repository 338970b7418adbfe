"""Sigma detections: rules -> queries (``sigma``, build time: needs pySigma), the detector
(``detect``), and findings with their exactly-once notifications (``findings``)."""
