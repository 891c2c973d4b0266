"""The Ray layer: grids, the Tune trainable, result tables. The method itself lives in memomentum/."""
