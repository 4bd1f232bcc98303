"""A lab's own attribution method, written outside influence-lab (see attributors.py)."""
