import os as _os

# Large CPU tensors on transparent huge pages: torch's CPU allocator reads THP_MEM_ALLOC_ENABLE once, at its first
# allocation, so it is set here, before perturbdiff imports torch (import perturbdiff before torch for it to act).
# Numerics are unchanged; at the papers' sizes a training step takes hundreds of thousands fewer page faults (the
# 02a_train notebook, bench/RESULTS.md). A value the user set, e.g. THP_MEM_ALLOC_ENABLE=0, is kept.
_os.environ.setdefault('THP_MEM_ALLOC_ENABLE', '1')

__version__ = "0.1.0"
