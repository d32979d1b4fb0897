"""Pictures: image grids, PNG and GIF files (`grids`) and matplotlib figures written as PNG + PDF (`charts`:
Pareto fronts, sweep curves, confusion matrices, labelled grids; `tradeoff`: the anonymizer benchmark's
privacy-utility curves)."""
