import unittest

from thumbnailer import thumbnail_name

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
GIF = b"GIF89a" + b"\x00" * 24


class ThumbnailNames(unittest.TestCase):
    def test_png(self) -> None:
        self.assertEqual(thumbnail_name("cat.png", PNG), "cat.thumb.png")

    def test_gif_named_wrongly(self) -> None:
        self.assertEqual(thumbnail_name("dog.jpg", GIF), "dog.thumb.gif")

    def test_not_a_picture(self) -> None:
        with self.assertRaises(ValueError):
            thumbnail_name("notes.txt", b"hello")


if __name__ == "__main__":
    unittest.main()
