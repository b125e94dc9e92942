"""The data plane: select -> copy -> split of the Amazon Bin Image Dataset into the project's bucket.

`stages` holds the DAG's three tasks (run_select, run_copy, run_split) and build_dataset (the CLI's one
command); `cli` registers `seed-synthetic` and `dataset build`; `seed` writes synthetic data in ABID's layout.
"""
