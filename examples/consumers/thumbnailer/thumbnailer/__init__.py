"""A small service that names thumbnails after the kind of picture it is given."""

from thumbnailer.kinds import thumbnail_name

__all__ = ["thumbnail_name"]
