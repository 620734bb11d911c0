"""Batch jobs over many files: the codec's commands run on this machine's cores (engine
``local``, forked processes) or on a Ray cluster (engine ``ray``, one actor per worker),
and photo libraries coded folder to folder with a manifest that makes a rerun resume.

Every engine codes through one ``Coder`` (one model per worker, loaded once, one torch
thread) and hands the bytes back to the driver, which alone writes outputs (atomically)
and the manifest: so the bytes are the same on any engine and worker count, and Ray
workers on other machines need neither the photos nor the output folder.

    ddncodec.batch.encode_tree("photos/", "library/", engine="ray", quality=4)

One module per job, imported one way (each only from those above it):

- ``coder``: the settings, one file (``Item``), coding it (``Coder``) to ``Coded`` or a failure
- ``progress``: a photo's own progress bar
- ``engines``: where files are coded, ``local`` (this process or forked workers) or ``ray`` (actors)
- ``driver``: ``run`` a batch on an engine, writing each file as it arrives, to a ``Summary``
- ``manifest``: ``OUTDIR/ddncodec-manifest.jsonl``, what makes a rerun resume
- ``trees``: files, folders and ``@list.txt`` in, a folder out (``encode_tree``, ``decode_tree``)

This module is the public face: what the command line, the benchmarks and scripts call.
"""

from __future__ import annotations

from ddncodec.batch.coder import Coded, Coder, Item, Settings
from ddncodec.batch.driver import Summary, run
from ddncodec.batch.engines import ENGINES
from ddncodec.batch.manifest import MANIFEST, Manifest
from ddncodec.batch.trees import code_tree, collect, decode_tree, encode_tree

__all__ = [
    "ENGINES",
    "MANIFEST",
    "Coded",
    "Coder",
    "Item",
    "Manifest",
    "Settings",
    "Summary",
    "code_tree",
    "collect",
    "decode_tree",
    "encode_tree",
    "run",
]
