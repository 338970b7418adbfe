"""The Lambda's side of AWS: its routes (``handler``), trigger shapes, EMF metrics, the custom resource."""
