import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
# small tensors: one thread avoids stalls when the two cores are shared
torch.set_num_threads(1)
