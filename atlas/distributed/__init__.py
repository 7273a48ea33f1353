"""Distributed ingestion: Parquet shards written by Ray workers, imported by the driver."""
