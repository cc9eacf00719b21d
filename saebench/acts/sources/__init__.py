"""Image sources for activation caching: indexable, deterministic, fingerprinted collections of images.

Every source yields :class:`Sample` ``(image, label, index, caption)`` and raises
:class:`UnreadableImageError`
(carrying the index) for an image it cannot decode, so the cache runner can skip and count it.
"""

from saebench.acts.sources.base import (
    IMAGE_EXTENSIONS,
    UNLABELED,
    ImageSource,
    Sample,
    UnreadableImageError,
    decode_image,
)
from saebench.acts.sources.fashion_mnist import FashionMNISTSource, read_idx
from saebench.acts.sources.image_folder import ImageFolderSource
from saebench.acts.sources.in_memory import SKIMAGE_PHOTOS, SkimagePhotosSource, TensorImageSource
from saebench.acts.sources.subset import SubsetSource, subset
from saebench.acts.sources.webdataset import WebDatasetSource

__all__ = [
    "IMAGE_EXTENSIONS",
    "SKIMAGE_PHOTOS",
    "UNLABELED",
    "FashionMNISTSource",
    "ImageFolderSource",
    "ImageSource",
    "Sample",
    "SkimagePhotosSource",
    "SubsetSource",
    "TensorImageSource",
    "UnreadableImageError",
    "WebDatasetSource",
    "decode_image",
    "read_idx",
    "subset",
]
