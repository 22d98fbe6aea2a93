"""Analyses of recorded or replayed runs (data influence in decentralized learning, ...)."""
