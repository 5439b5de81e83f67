import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
# small tensors: one thread avoids stalls when the two cores are shared
torch.set_num_threads(1)


def _minutes(item) -> float:
    return max((mark.kwargs.get("minutes", 0) for mark in item.iter_markers("learning")), default=0)


def pytest_collection_modifyitems(config, items):
    """The learning runs (``@pytest.mark.learning(minutes=...)``, minutes on one core of a 2-core
    AVX2 machine) first, the longest at the head and the shortest right behind it, then the rest
    longest first; everything else keeps its order after them.

    With ``-n logical --dist load`` xdist hands each worker two consecutive tests and queues the
    second behind the first: the shortest run waits behind the longest, while the other workers
    start on the next longest and take the rest as they free."""
    items.sort(key=lambda item: -_minutes(item))
    timed = sum(1 for item in items if _minutes(item) > 0)
    if timed > 2:
        items.insert(1, items.pop(timed - 1))
