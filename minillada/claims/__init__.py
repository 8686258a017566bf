"""From trained runs to the paper's claims: what a study runs (`design`), its runs and tables,
cached (`study`, `table_cache`), the statistics across runs (`statistics`), the claims and the
report rendered from them (`report`), the notebooks' parameters (`notebook_parameters`) and how
long a reproduction takes (`reproduction_time`)."""
