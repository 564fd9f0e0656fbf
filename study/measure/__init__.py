"""Measuring trials on shared hardware: GPU locks, idle baselines, exclusive energy windows, energy attribution."""
