"""An event -> the document we index: field flattening, ECS names; pure functions, no I/O."""
