"""Replay-buffer pieces: sub-trajectory sampling from trajectories stored in pieces."""
from torchrl_layered.data.samplers import FragmentedSliceSampler, fragmented_slice_sampler, torchrl_samples_fragments

__all__ = ["FragmentedSliceSampler", "fragmented_slice_sampler", "torchrl_samples_fragments"]
