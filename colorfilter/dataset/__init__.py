"""The released form of a selection: parquet shards, indices, manifest and dataset card.

`writer.write_selection` turns an array of selected seq_ids into a folder that
`datasets.load_dataset(folder)` loads as is; `colorfilter.release.release` uploads it.
Modules here import only numpy/pyarrow at start-up; transformers and matplotlib load lazily.
"""
