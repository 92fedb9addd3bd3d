"""The parts of scripts/extsan that work on reports rather than on running programs.

One module per concern: merging the per-process reports (merge), writing files atomically
(atomic), what a finding is about and which of its frames are the extension's (findings),
fingerprints (fingerprint), suppression files (suppressions), baselines (baseline), the gate's
classification and exit status (gate), and the renderings for people and CI services (text,
html, graph, sarif, junit). Standard library only; Python 3.9 to 3.13.
"""
