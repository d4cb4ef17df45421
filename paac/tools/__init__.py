"""Layer 5: the tools on top: command line, evaluation, comparison, benchmark, plots and presets."""
