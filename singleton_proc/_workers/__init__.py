"""The worker wing: worker processes, their protocol, the pool engine and drivers."""
