"""The fixed histogram of activations that neuron density is counted in (one home for the
recording, the store's readers and the page)."""

# Signed, roughly logarithmic bin edges; the 16 bins are (-inf, -10], (-10, -3], ..., (10, inf).
EDGES = (-10.0, -3.0, -1.0, -0.3, -0.1, -0.03, -0.01, 0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
N_BINS = len(EDGES) + 1
