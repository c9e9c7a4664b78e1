"""Training SAM-Audio: synthetic data, the codec and flow-matching objectives, and a resumable loop.

Needs the `train` extra (auraloss, matplotlib) on top of `server`.
"""
