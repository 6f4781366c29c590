"""Readers and writers: input documents, parquet shards, atomic files, and the storage layer.

storage (Location, fsspec/pyarrow backends), preflight (checks before work), commit (unit
completion records), cache (node-local copies), redact (secrets out of messages), config
(the `storage` config section). See colorfilter.io.storage for the cloud-storage design.
"""
