"""The actor runtime: knows trio, cycles and messages, and nothing about memory."""
