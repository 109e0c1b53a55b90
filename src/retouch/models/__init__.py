"""Model weights: the catalog of known weights and the local store that pulls and keeps them.

Nothing here downloads on import or at first use: a missing model raises ModelNotAvailable
with the exact ``retouch models pull NAME`` command.
"""
