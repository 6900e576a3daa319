"""Method modules: pure functions, numpy out, no widget code."""
