"""Reading: what a log file's key says, S3 objects, and bytes -> events (the streaming decoder)."""
