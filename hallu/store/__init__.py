"""Where results live: run.json and Parquet shards, on a local disk or S3, and reading them back."""
