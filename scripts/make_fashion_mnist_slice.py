#!/usr/bin/env python3
"""Writes tests/fixtures/fashion-mnist-test-500/: the first 500 images and labels of
Fashion-MNIST's test split (t10k) as IDX files, gzipped, in the dataset's own format, so that
tests can check the shipped classifier on real images without the 30 MB dataset.

Source: Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist). Fashion-MNIST is
(c) Zalando SE, MIT licence (https://github.com/zalandoresearch/fashion-mnist).
Usage: python3 scripts/make_fashion_mnist_slice.py [SOURCE_DIR]
"""
import gzip
import os
import struct
import sys

COUNT = 500
source = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "fashion-mnist-test-500")
os.makedirs(out, exist_ok=True)

with gzip.open(os.path.join(source, "t10k-images-idx3-ubyte.gz")) as f:
    magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
    assert magic == 2051 and n >= COUNT, (magic, n)
    images = f.read(COUNT * rows * cols)
with gzip.open(os.path.join(source, "t10k-labels-idx1-ubyte.gz")) as f:
    magic, n = struct.unpack(">II", f.read(8))
    assert magic == 2049 and n >= COUNT, (magic, n)
    labels = f.read(COUNT)

# mtime=0: the same bytes on every run
with open(os.path.join(out, "t10k-images-idx3-ubyte.gz"), "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
    f.write(struct.pack(">IIII", 2051, COUNT, rows, cols) + images)
with open(os.path.join(out, "t10k-labels-idx1-ubyte.gz"), "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
    f.write(struct.pack(">II", 2049, COUNT) + labels)
print(f"wrote {COUNT} test images and labels to {os.path.normpath(out)}; label counts:",
      [labels.count(c) for c in range(10)])
