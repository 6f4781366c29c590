"""Ray job entry point: `python -m pipelines.evaluate CONFIG [--set k=v ...] [--overwrite]`."""

from pipelines._entry import main

if __name__ == "__main__":
    main("evaluate")
