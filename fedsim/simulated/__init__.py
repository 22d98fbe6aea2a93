"""Simulated time and churn: the clock, the network model and who is up when."""
