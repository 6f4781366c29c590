"""Readers and writers: input documents, parquet shards, atomic files."""
