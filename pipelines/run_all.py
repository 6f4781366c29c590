"""Ray job entry point for the whole pipeline:
`python -m pipelines.run_all CONFIG [--set k=v ...] [--overwrite] [--stages a,b]`.
"""

from pipelines._entry import RUN_ALL, main

if __name__ == "__main__":
    main(RUN_ALL)
