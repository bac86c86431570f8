"""Model input preprocessing without torch: ``tokenizers`` for text, Pillow + numpy for images.

Both reproduce the Hugging Face processors the models were trained with (tests compare them).
"""

from __future__ import annotations

from .image import ImagePreprocessor, decode_image
from .text import TextPreprocessor, Window

__all__ = ["ImagePreprocessor", "TextPreprocessor", "Window", "decode_image"]
