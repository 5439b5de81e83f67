import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
# small tensors: one thread avoids stalls when the two cores are shared
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The longest learning runs first (``@pytest.mark.learning(minutes=...)``, one core of a
    2-core AVX2 machine), so that they start at once on parallel workers (``-n logical --dist
    load``); everything else keeps its order. xdist queues one test behind each running one, so
    the second longest may still wait behind the longest."""
    items.sort(key=lambda item: -max((mark.kwargs.get("minutes", 0) for mark in item.iter_markers("learning")),
                                     default=0))
