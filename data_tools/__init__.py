"""Data tools: the copick-layout data layer, the cryo-ET simulator, sparsification."""
