"""Load AWS CloudTrail log files from S3 into Elasticsearch / OpenSearch."""
