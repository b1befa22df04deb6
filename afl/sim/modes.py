"""The loop's modes and staleness policies, in a module of their own: the config checks them without
importing the loop (which imports torch)."""

MODES = ("async", "sync")
STALENESS_POLICIES = ("keep", "drop")
