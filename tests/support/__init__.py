"""Test helpers shared by several test modules (simulated hardware, small clusters)."""
