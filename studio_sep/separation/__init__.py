"""The separation engine, arrays in and arrays out: FastMNMF2 (fastmnmf2.py), NMF tools
(nmf.py) and the fit's starting point (initial.py). No files, no sessions."""
