"""Tiling defaults of ``segment`` and ``ingest``, apart from the pipeline so that reading them imports no torch."""

#: Tile core in model pixels: 1216² read with the default halo (11% halo overhead); two model streams on CPU keep
#: at most about 0.8 GB of the heap in use, under ``malloc.RELEASE_ABOVE`` (BENCHMARKS.md, "Session 26").
DEFAULT_TILE_SIZE = 1152
#: Halo around each tile's core in model pixels.
DEFAULT_OVERLAP = 32
