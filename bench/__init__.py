"""PEX's benchmarks (`make bench`): each measures PEX against a baseline run in the same
process, so the figure that matters is a ratio that survives a noisy machine."""
