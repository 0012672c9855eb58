"""The lock wing: one instance per name (files, record, proof, policy, stop).

It never imports the worker wing (``tests/test_layout.py`` says so).
"""
