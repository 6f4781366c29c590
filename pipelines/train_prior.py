"""Ray job driver: `colorfilter train-prior` as `python -m pipelines.train_prior` (cli.job_main)."""

from colorfilter.cli import job_main

if __name__ == "__main__":
    job_main("train-prior")
