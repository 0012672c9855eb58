"""The shared base: platform switches, process trees, waits, held-off signals.

Every wing builds on it; it imports nothing above itself.
"""
