"""Held-out evaluation: metrics and plot data for any number of classes."""
