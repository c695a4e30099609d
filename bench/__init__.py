"""`make bench`: the service's speed measured against the in-process floor and the usual way.

Only ratios measured in one run mean anything on a shared machine, so every figure here
is taken side by side with the thing it is compared to. Entry point: ``python -m bench.run``.
"""
