"""Ray job entry point: `python -m pipelines.prepare CONFIG [--set k=v ...] [--overwrite]`."""

from pipelines._entry import main

if __name__ == "__main__":
    main("prepare")
