"""Drivers: commands that chain many stage runs (each a LightningCLI run of a stage module) and
turn their outputs into tables. They are not LightningModules and hold no training logic of their own.

* ``pipeline``: synthesis -> search -> retraining (:mod:`dfnas_pl.drivers.pipeline`)
* ``paper-table``: the paper's comparison of search-data sources (:mod:`dfnas_pl.drivers.paper_table`)
* ``groundtruth``: real-data accuracy of fixed architectures of a space (:mod:`dfnas_pl.drivers.groundtruth`)
* ``rank-fidelity``: how well a supernet trained on each data source ranks them
  (:mod:`dfnas_pl.drivers.rank_fidelity`)
* ``synthesis-sweep``: the distillation check (seeds, intervals) over synthesis variants
  (:mod:`dfnas_pl.drivers.synthesis_sweep`)
"""
