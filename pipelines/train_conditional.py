"""Ray job entry point:
`python -m pipelines.train_conditional CONFIG [--set k=v ...] [--overwrite]`.
"""

from pipelines._entry import main

if __name__ == "__main__":
    main("train-conditional")
