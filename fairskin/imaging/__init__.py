"""Image handling for the engine: safe decoding, square resizing, skin tone (ITA), hair removal
and procedurally drawn demo lesions. Plain Python, Pillow, NumPy and OpenCV; no Django."""
