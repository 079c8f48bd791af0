"""drdpgan: a reproduction and teaching package for DR-DPGAN (Lin, Wang, Zheng, 2025).

DR-DPGAN anonymizes a face reversibly: a fake identity drives a StyleGAN2 generator
through its W+ space while a binary "password" derived from the real identity is hidden
in the image; a password extractor reads it back and the same generator path recovers
the face. See ``notebooks/00_overview.ipynb`` for the map of the package.
"""

__version__ = "0.1.0"
